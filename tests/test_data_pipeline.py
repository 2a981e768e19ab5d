"""d2lcore.pipeline: Fashion-MNIST laid out for torchvision, read back by torchvision
itself from tiny IDX files, and the timing of a loader's epoch."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms

from d2lcore.data import TensorLoader, load_fashion_mnist
from d2lcore.datafiles import DataFileError, DataNotFoundError
from d2lcore.pipeline import (
    TORCHVISION_SUBDIR,
    time_epoch,
    torch_threads,
    torchvision_fashion_mnist,
)

Tiny = tuple[Path, dict[str, str], dict[str, np.ndarray]]


def test_torchvision_reads_the_same_images_and_labels(tiny_fashion_mnist: Tiny, tmp_path: Path):
    source, md5, arrays = tiny_fashion_mnist
    root = torchvision_fashion_mnist(tmp_path / "tv", root=source, checksums=md5)
    assert root == tmp_path / "tv"
    for train, prefix in ((True, "train"), (False, "t10k")):
        ds = torchvision.datasets.FashionMNIST(root, train=train, download=False)
        assert torch.equal(ds.data, torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"]))
        assert ds.targets.tolist() == arrays[f"{prefix}-labels-idx1-ubyte"].tolist()
    # ... and as the book's loader reads them, through a transform and a DataLoader
    ds = torchvision.datasets.FashionMNIST(root, train=False, transform=transforms.ToTensor())
    X, y = next(iter(DataLoader(ds, batch_size=8)))
    images, labels = load_fashion_mnist("test", source, checksums=md5)
    assert torch.equal(X, images.float().div(255).unsqueeze(1)) and torch.equal(y, labels)


def test_uncompressed_files_are_linked_not_copied(tiny_fashion_mnist: Tiny, tmp_path: Path):
    source, md5, arrays = tiny_fashion_mnist
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in arrays:
        (plain / name).write_bytes(gzip.decompress((source / f"{name}.gz").read_bytes()))
    root = torchvision_fashion_mnist(tmp_path / "tv", root=plain, checksums=md5)
    raw = root / TORCHVISION_SUBDIR
    assert all((raw / name).is_symlink() for name in arrays)
    assert len(torchvision.datasets.FashionMNIST(root, train=True)) == 20


def test_a_second_call_replaces_the_files(tiny_fashion_mnist: Tiny, tmp_path: Path):
    source, md5, _ = tiny_fashion_mnist
    torchvision_fashion_mnist(tmp_path / "tv", root=source, checksums=md5)
    torchvision_fashion_mnist(tmp_path / "tv", root=source, checksums=md5)
    raw = tmp_path / "tv" / TORCHVISION_SUBDIR
    assert sorted(p.name for p in raw.iterdir()) == sorted(md5)  # no temporary files left


def test_a_folder_without_the_files_is_named_in_the_error(tmp_path: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match="lacks"):
        torchvision_fashion_mnist(tmp_path / "tv", root=empty)


def test_a_file_that_fails_its_checksum_is_refused(tiny_fashion_mnist: Tiny, tmp_path: Path):
    source, md5, _ = tiny_fashion_mnist
    bad = dict(md5, **{"t10k-labels-idx1-ubyte": "0" * 32})
    with pytest.raises(DataFileError, match="checksum"):
        torchvision_fashion_mnist(tmp_path / "tv", root=source, checksums=bad)


def test_time_epoch_counts_every_example_and_takes_the_fastest_pass():
    X, y = torch.randn(50, 3), torch.arange(50)
    loaders = [TensorLoader(X, y, batch_size=16, device="cpu"),
               DataLoader(TensorDataset(X, y), batch_size=16, shuffle=True)]  # fmt: skip
    for loader in loaders:
        seconds, count = time_epoch(loader, device="cpu", repeats=3)
        assert count == 50 and 0 < seconds < 5
    passes = []

    class Counting:
        def __iter__(self):
            passes.append(1)
            yield (X, y)

    time_epoch(Counting(), device="cpu", repeats=2)
    assert len(passes) == 2
    with pytest.raises(ValueError, match="repeats"):
        time_epoch(loaders[0], device="cpu", repeats=0)


def test_torch_threads_restores_the_number_even_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError
    assert torch.get_num_threads() == before
