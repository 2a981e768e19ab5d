import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from d2lcore import data, datafiles, download
from d2lcore.data import Splits, TensorLoader, synthetic_linear_data, text_labels, train_val_split
from d2lcore.datafiles import DataFileError, DataNotFoundError, load_fashion_mnist, read_idx

from .conftest import idx_bytes

REAL = datafiles.DEBIAN_DIR.is_dir() or bool(os.environ.get(datafiles.FASHION_MNIST_ENV))


def test_synthetic_linear_data_follows_the_model():
    X, y = synthetic_linear_data([2.0, -3.4], 4.2, 2000, noise=0.01, seed=0, device="cpu")
    assert X.shape == (2000, 2) and y.shape == (2000, 1)
    residual = y - (X @ torch.tensor([[2.0], [-3.4]]) + 4.2)
    assert residual.std().item() == pytest.approx(0.01, rel=0.1)
    X2, _ = synthetic_linear_data([2.0, -3.4], 4.2, 2000, seed=0, device="cpu")
    assert torch.equal(X, X2)


def test_reads_tiny_idx_files(tiny_fashion_mnist):
    folder, md5, arrays = tiny_fashion_mnist
    images, labels = load_fashion_mnist("train", folder, checksums=md5)
    assert images.shape == (20, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64
    assert np.array_equal(images.numpy(), arrays["train-images-idx3-ubyte"])
    assert np.array_equal(labels.numpy(), arrays["train-labels-idx1-ubyte"])
    test_images, _ = load_fashion_mnist("test", folder, checksums=md5)
    assert len(test_images) == 8


def test_uncompressed_files_are_read_too(tmp_path):
    arr = np.arange(12, dtype=np.uint8)
    (tmp_path / "x").write_bytes(idx_bytes(arr))
    assert np.array_equal(read_idx(tmp_path / "x"), arr)


def test_checksum_mismatch_names_file_and_fix(tiny_fashion_mnist):
    folder, md5, _ = tiny_fashion_mnist
    bad = dict(md5, **{"train-images-idx3-ubyte": "0" * 32})
    with pytest.raises(DataFileError) as err:
        load_fashion_mnist("train", folder, checksums=bad)
    msg = str(err.value)
    assert "train-images-idx3-ubyte.gz" in msg and "checksum" in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_truncated_gzip_names_file_and_fix(tiny_fashion_mnist):
    folder, md5, _ = tiny_fashion_mnist
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-12])
    with pytest.raises(DataFileError, match=r"train-labels-idx1-ubyte\.gz is corrupt") as err:
        load_fashion_mnist("train", folder, checksums=md5)
    assert "Delete or replace" in str(err.value)


def test_truncated_idx_payload_is_caught_without_checksum(tmp_path):
    raw = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))[:-100]
    (tmp_path / "t.gz").write_bytes(gzip.compress(raw))
    with pytest.raises(DataFileError, match="truncated"):
        read_idx(tmp_path / "t.gz")


def test_garbage_is_not_an_idx_file(tmp_path):
    (tmp_path / "g").write_bytes(b"this is not an idx file at all")
    with pytest.raises(DataFileError, match="not a uint8 IDX file"):
        read_idx(tmp_path / "g")


def test_missing_data_lists_places_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setattr(datafiles, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(datafiles, "USER_CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.delenv(datafiles.FASHION_MNIST_ENV, raising=False)
    with pytest.raises(DataNotFoundError) as err:
        load_fashion_mnist("train")
    msg = str(err.value)
    assert "no-debian" in msg and "no-cache" in msg and "D2L_FASHION_MNIST_DIR" in msg


def test_env_variable_folder_is_searched(tiny_fashion_mnist, monkeypatch):
    folder, md5, _ = tiny_fashion_mnist
    monkeypatch.setenv(datafiles.FASHION_MNIST_ENV, str(folder))
    assert datafiles.fashion_mnist_dirs()[0] == Path(folder)


def test_the_data_module_keeps_the_names_and_the_command_the_readme_gives(tiny_fashion_mnist):
    """``d2lcore.data.download_fashion_mnist`` (the error messages' advice) and
    ``python -m d2lcore.data --check`` (the Makefile's) are :mod:`d2lcore.datafiles`' and
    :mod:`d2lcore.download`'s."""
    for name in ("find_fashion_mnist", "DEBIAN_DIR", "FASHION_MNIST_FILES"):
        assert getattr(data, name) is getattr(datafiles, name)
    for name in ("download_fashion_mnist", "ensure_fashion_mnist"):
        assert getattr(data, name) is getattr(download, name)
    assert "import d2lcore.data as d; d.download_fashion_mnist()" in datafiles.HOW_TO_GET
    folder, _, _ = tiny_fashion_mnist
    command = [sys.executable, "-m", "d2lcore.data", "--root", str(folder)]
    found = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert found.returncode == 0 and found.stdout.strip() == str(folder)
    checked = subprocess.run([*command, "--check"], capture_output=True, text=True, timeout=120)
    assert checked.returncode == 1 and "fails its checksum" in checked.stderr  # tiny files


def test_text_labels():
    assert text_labels(torch.tensor([0, 9, 7])) == ["t-shirt", "ankle boot", "sneaker"]


@pytest.mark.skipif(not REAL, reason="Fashion-MNIST is not installed")
def test_real_fashion_mnist_checksums_and_shapes():
    folder = datafiles.check_fashion_mnist()
    assert folder.is_dir()
    splits = data.fashion_mnist_splits(batch_size=256, device="cpu")
    assert len(splits.train[1]) == 50_000 and len(splits.val[1]) == 10_000
    assert len(splits.loader()) == -(-50_000 // 256)
    X, y = next(iter(splits.loader("test")))
    assert X.shape[1:] == (1, 28, 28) and 0.0 <= X.min() and X.max() <= 1.0
    assert set(y.unique().tolist()) <= set(range(10))


def test_loader_yields_every_example_once_per_epoch():
    X = torch.arange(103).float().unsqueeze(1)
    y = torch.arange(103)
    loader = TensorLoader(X, y, batch_size=10, seed=3, device="cpu")
    assert len(loader) == 11
    epochs = []
    for _ in range(2):
        seen = torch.cat([yb for _, yb in loader])
        assert sorted(seen.tolist()) == list(range(103))
        epochs.append(seen)
    assert not torch.equal(epochs[0], epochs[1])  # reshuffled each epoch
    for Xb, yb in loader:
        assert torch.equal(Xb[:, 0].long(), yb)  # rows stay paired


def test_loader_is_repeatable_under_a_seed():
    X = torch.randn(50, 3)
    order = [
        [yb.tolist() for _, yb in TensorLoader(X, torch.arange(50), batch_size=8, seed=5)]
        for _ in range(2)
    ]
    assert order[0] == order[1]
    unshuffled = TensorLoader(X, torch.arange(50), batch_size=8, shuffle=False)
    assert torch.cat([yb for _, yb in unshuffled]).tolist() == list(range(50))


def test_loader_rejects_bad_input():
    with pytest.raises(ValueError, match="differ in length"):
        TensorLoader(torch.zeros(3), torch.zeros(4), batch_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(torch.zeros(3), batch_size=0)


def test_train_val_split_partitions():
    X, y = torch.arange(100).float(), torch.arange(100)
    (Xt, yt), (Xv, yv) = train_val_split(X, y, val_size=0.2, seed=0)
    assert len(Xv) == 20 and len(Xt) == 80
    assert sorted(torch.cat([yt, yv]).tolist()) == list(range(100))
    assert torch.equal(Xt.long(), yt)
    with pytest.raises(ValueError):
        train_val_split(X, val_size=100)


def test_splits_make_training_and_evaluation_loaders():
    X = torch.arange(100).float().unsqueeze(1)
    y = torch.arange(100)
    splits = Splits((X[:60], y[:60]), val=[X[60:80], y[60:80]], batch_size=16,
                    eval_batch_size=32, seed=4)  # fmt: skip
    assert isinstance(splits.val, tuple) and splits.test is None
    train = splits.loader()
    assert isinstance(train, TensorLoader) and train.shuffle and train.batch_size == 16
    same = TensorLoader(X[:60], y[:60], batch_size=16, seed=4)
    assert [b.tolist() for _, b in train] == [b.tolist() for _, b in same]
    other = splits.loader("train", batch_size=10, seed=5)
    assert len(other) == 6 and [b.tolist() for _, b in other] != [b.tolist() for _, b in same]
    val = splits.loader("val")
    assert not val.shuffle and val.batch_size == 32
    assert torch.cat([b for _, b in val]).tolist() == list(range(60, 80))
    assert splits.loader("val", batch_size=5).batch_size == 5
    assert train.device == X.device  # the data stays where it lives
    with pytest.raises(ValueError, match="no 'test' split"):
        splits.loader("test")
    with pytest.raises(ValueError, match="unknown split"):
        splits.loader("validation")
    with pytest.raises(ValueError, match="3 inputs but 4 targets"):
        Splits((torch.zeros(3), torch.zeros(4)))
