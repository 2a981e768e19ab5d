"""Data in memory: synthetic regression data, :class:`Splits` (the tensors of a data
set's training, validation and test splits), :class:`TensorLoader`, which cuts a small
data set that stays on the training device into minibatches, and Fashion-MNIST as
:class:`Splits` (:func:`fashion_mnist_splits`) with its class names.

Fashion-MNIST's files (finding, verifying and reading them) live in
:mod:`d2lcore.datafiles`, their download in :mod:`d2lcore.download`. What the README,
the Makefile and the error messages call
``d2lcore.data``'s (``download_fashion_mnist``, ``ensure_fashion_mnist``,
``find_fashion_mnist``, ``python -m d2lcore.data --check``) is re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

# Re-exported (``X as X``): the names the README, the error messages and the Binder and
# Colab tests use.
from d2lcore.datafiles import DEBIAN_DIR as DEBIAN_DIR
from d2lcore.datafiles import FASHION_MNIST_FILES as FASHION_MNIST_FILES
from d2lcore.datafiles import find_fashion_mnist as find_fashion_mnist
from d2lcore.datafiles import load_fashion_mnist
from d2lcore.device import get_device, make_generator
from d2lcore.download import download_fashion_mnist as download_fashion_mnist
from d2lcore.download import ensure_fashion_mnist as ensure_fashion_mnist

# ----------------------------------------------------------------------------------
# Synthetic data


def synthetic_linear_data(
    w: torch.Tensor | Sequence[float],
    b: float,
    num_examples: int,
    *,
    noise: float = 0.01,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``y = X w + b + noise`` with ``X ~ N(0, 1)``.

    Returns ``X`` of shape ``(num_examples, len(w))`` and ``y`` of shape
    ``(num_examples, 1)``, both on ``device``.
    """
    gen = make_generator(seed)
    w = torch.as_tensor(w, dtype=torch.float32).reshape(-1, 1)  # (d, 1)
    X = torch.randn(num_examples, len(w), generator=gen)  # (n, d)
    y = X @ w + b + noise * torch.randn(num_examples, 1, generator=gen)  # (n, 1)
    device = get_device(device)
    return X.to(device), y.to(device)


# ----------------------------------------------------------------------------------
# In-memory loader


class TensorLoader:
    """Minibatches sliced from tensors that live on the training device.

    Each pass over the loader is one epoch: a fresh permutation (when ``shuffle``)
    from the loader's own generator, so every example appears exactly once per epoch
    and the sequence of epochs is the same for the same ``seed`` on any device.

    Args:
        tensors: tensors with the same first dimension (e.g. ``X`` and ``y``).
        batch_size: examples per minibatch; the last batch may be smaller.
        shuffle: draw a new order every epoch (training) or keep the order (evaluation).
        seed: seed of the shuffling stream.
        device: where to keep the data; defaults to :func:`get_device`.
    """

    def __init__(
        self,
        *tensors: torch.Tensor,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> None:
        if not tensors:
            raise ValueError("TensorLoader needs at least one tensor")
        n = len(tensors[0])
        if any(len(t) != n for t in tensors):
            raise ValueError(f"tensors differ in length: {[len(t) for t in tensors]}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        self.device = get_device(device)
        self.tensors = tuple(t.to(self.device) for t in tensors)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self._gen = make_generator(seed)

    @property
    def num_examples(self) -> int:
        return len(self.tensors[0])

    def __len__(self) -> int:
        return -(-self.num_examples // self.batch_size)  # ceil

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        n = self.num_examples
        if self.shuffle:
            # Drawn on the CPU so the order does not depend on the device.
            order = torch.randperm(n, generator=self._gen).to(self.device)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                # index_select is the same gather as t[idx], at half the cost on the CPU.
                yield tuple(t.index_select(0, idx) for t in self.tensors)
        else:
            for start in range(0, n, self.batch_size):
                yield tuple(t[start : start + self.batch_size] for t in self.tensors)


def train_val_split(
    *tensors: torch.Tensor, val_size: int | float, seed: int = 0
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Split tensors at random into a training part and a validation part.

    Args:
        val_size: number of validation examples, or a fraction in ``(0, 1)``.
    Returns:
        ``(train_tensors, val_tensors)``.
    """
    n = len(tensors[0])
    k = int(round(val_size * n)) if isinstance(val_size, float) else int(val_size)
    if not 0 < k < n:
        raise ValueError(f"val_size must leave both parts non-empty; got {val_size} of {n}")
    order = torch.randperm(n, generator=make_generator(seed))
    val_idx, train_idx = order[:k], order[k:]
    return tuple(t[train_idx] for t in tensors), tuple(t[val_idx] for t in tensors)


#: The tensors ``(X, y)`` of one split of a data set.
Split = tuple[torch.Tensor, torch.Tensor]
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True, eq=False)
class Splits:
    """A data set in memory: the tensors ``(X, y)`` of a training split and optional
    validation and test splits, and how to cut them into minibatches.

    ``batch_size`` and ``seed`` are the defaults of the training loader (a trainer
    with its own configuration passes its own); ``eval_batch_size`` is the batch size
    of the validation and test loaders. Loaders are made on demand by :meth:`loader`,
    so one data set serves any number of runs.
    """

    train: Split
    val: Split | None = None
    test: Split | None = None
    batch_size: int = 256
    eval_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        for name in SPLIT_NAMES:
            split = getattr(self, name)
            if split is None:
                continue
            X, y = split  # a pair, whatever sequence it came as
            if len(X) != len(y):
                raise ValueError(f"{name}: {len(X)} inputs but {len(y)} targets")
            object.__setattr__(self, name, (X, y))
        if self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("batch_size and eval_batch_size must be at least 1")

    def split(self, name: str) -> Split:
        """The tensors of split ``name`` (``"train"``, ``"val"`` or ``"test"``)."""
        if name not in SPLIT_NAMES:
            raise ValueError(f"unknown split {name!r}; choose from {SPLIT_NAMES}")
        split: Split | None = getattr(self, name)
        if split is None:
            raise ValueError(f"this data set has no {name!r} split")
        return split

    def loader(
        self,
        name: str = "train",
        *,
        batch_size: int | None = None,
        seed: int | None = None,
        device: torch.device | str | None = None,
    ) -> TensorLoader:
        """A new loader over split ``name``: shuffled from ``seed`` (default
        :attr:`seed`) in minibatches of ``batch_size`` (default :attr:`batch_size`)
        for ``"train"``; in order, in batches of :attr:`eval_batch_size` (or
        ``batch_size``) for ``"val"`` and ``"test"``. The data stays on its device
        unless ``device`` says otherwise."""
        X, y = self.split(name)
        train = name == "train"
        default_bs = self.batch_size if train else self.eval_batch_size
        return TensorLoader(X, y, batch_size=batch_size or default_bs, shuffle=train,
                            seed=self.seed if seed is None else seed,
                            device=X.device if device is None else device)  # fmt: skip


# ----------------------------------------------------------------------------------
# Fashion-MNIST in memory

#: Text labels of the ten classes, in label order.
FASHION_MNIST_LABELS = (
    "t-shirt", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip


def text_labels(labels: torch.Tensor | Sequence[int]) -> list[str]:
    """Turn class indices into Fashion-MNIST's text labels."""
    return [FASHION_MNIST_LABELS[int(i)] for i in labels]


def fashion_mnist_splits(
    batch_size: int = 256,
    *,
    val_size: int = 10_000,
    train_size: int | None = None,
    flatten: bool = False,
    seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    device: torch.device | str | None = None,
) -> Splits:
    """Fashion-MNIST as device-resident :class:`Splits`, pixels scaled to ``[0, 1]``.

    The 60,000 training images are split into ``60,000 - val_size`` for training and
    ``val_size`` for validation; the 10,000 test images are kept for the final test.

    Args:
        batch_size: training minibatch size (evaluation uses larger batches).
        val_size: validation examples taken from the training split.
        train_size: keep only this many training examples (e.g. a fast CPU build).
        flatten: give images as vectors of 784 values instead of ``(1, 28, 28)``.
        seed: seed of the split and of the shuffling.
        device: where the tensors live; defaults to :func:`get_device`.
    """
    shape = (-1, 784) if flatten else (-1, 1, 28, 28)
    images, labels = load_fashion_mnist("train", root)
    X = (images.float() / 255).reshape(shape)
    (X_train, y_train), (X_val, y_val) = train_val_split(X, labels, val_size=val_size, seed=seed)
    if train_size is not None:
        # Checked before slicing: X[:0] is empty and X[:-100] quietly drops 100 images.
        if (isinstance(train_size, bool) or not isinstance(train_size, int)
                or not 1 <= train_size <= len(y_train)):  # fmt: skip
            raise ValueError(f"train_size must be a whole number from 1 to {len(y_train):,} "
                             f"(the training images left after {val_size:,} for validation), "
                             f"not {train_size!r}")  # fmt: skip
        X_train, y_train = X_train[:train_size], y_train[:train_size]
    test_images, test_labels = load_fashion_mnist("test", root)
    X_test = (test_images.float() / 255).reshape(shape)
    device = get_device(device)
    return Splits(
        train=(X_train.to(device), y_train.to(device)),
        val=(X_val.to(device), y_val.to(device)),
        test=(X_test.to(device), test_labels.to(device)),
        batch_size=batch_size, eval_batch_size=max(batch_size, 1024), seed=seed,
    )  # fmt: skip


if __name__ == "__main__":  # the check the Makefile and the Binder tests run
    from d2lcore.datafiles import main

    raise SystemExit(main())
