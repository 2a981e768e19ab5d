"""Hostile and broken data files: a folder the user named is used or refused (never
skipped without a word), unreadable files are named for what they are, and a
decompression bomb is stopped at the expected size."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from d2lcore import data
from d2lcore.data import DataFileError, DataNotFoundError, find_fashion_mnist, read_idx

from .conftest import idx_bytes, serving

NAME = "train-images-idx3-ubyte"


@pytest.fixture
def system_copy(tiny_fashion_mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A good system copy, so that skipping a broken named folder would go unnoticed."""
    folder, _, _ = tiny_fashion_mnist
    system = tmp_path / "system"
    shutil.copytree(folder, system)
    monkeypatch.setattr(data, "DEBIAN_DIR", system)
    monkeypatch.setattr(data, "USER_CACHE_DIR", tmp_path / "no-cache")
    return system


def named(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setenv(data.FASHION_MNIST_ENV, str(folder))


def test_empty_named_folder_is_refused(system_copy, tmp_path, monkeypatch) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    named(monkeypatch, empty)
    with pytest.raises(DataNotFoundError, match=rf"{empty}.*D2L_FASHION_MNIST_DIR.*lacks"):
        find_fashion_mnist()


def test_missing_named_folder_is_refused(system_copy, tmp_path, monkeypatch) -> None:
    named(monkeypatch, tmp_path / "nowhere")
    with pytest.raises(DataNotFoundError, match="is not a folder"):
        find_fashion_mnist()
    with pytest.raises(DataNotFoundError, match=r"named by root="):
        find_fashion_mnist(tmp_path / "nowhere")


@pytest.mark.parametrize("kind", ["folder", "fifo", "loop", "dangling"])
def test_broken_file_in_named_folder_is_named(system_copy, tmp_path, monkeypatch, kind) -> None:
    folder = tmp_path / "mine"
    shutil.copytree(system_copy, folder)
    bad = folder / f"{NAME}.gz"
    bad.unlink()
    if kind == "folder":
        bad.mkdir()
    elif kind == "fifo":
        os.mkfifo(bad)
    elif kind == "loop":
        os.symlink(bad, bad)
    else:
        os.symlink(tmp_path / "gone", bad)
    named(monkeypatch, folder)
    with pytest.raises(DataFileError, match=rf"{bad}.*is (a folder|a broken link|not a regular)"):
        find_fashion_mnist()


def test_good_named_folder_is_used(system_copy, tiny_fashion_mnist, monkeypatch) -> None:
    folder, _, _ = tiny_fashion_mnist
    named(monkeypatch, folder)
    assert find_fashion_mnist() == folder


def test_unreadable_file_says_permission_not_corrupt(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every file whatever its mode")
    path = tmp_path / "x"
    path.write_bytes(idx_bytes(np.zeros((2, 3), dtype=np.uint8)))
    path.chmod(0)
    with pytest.raises(DataFileError, match="permission denied") as err:
        read_idx(path)
    assert "corrupt" not in str(err.value) and "chmod" in str(err.value)


def test_permission_error_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same message where the tests run as root: the open itself is refused."""
    path = tmp_path / "x"
    path.write_bytes(b"\0" * 16)

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataFileError, match="permission denied") as err:
        read_idx(path)
    assert "corrupt" not in str(err.value) and "Delete" not in str(err.value)


def test_decompression_bomb_stops_at_the_expected_size(tmp_path: Path) -> None:
    """A small .gz that expands far past its known size is refused after reading one
    byte more than that size, not read whole."""
    path = tmp_path / "bomb.gz"
    header = idx_bytes(np.zeros((1, 28, 28), dtype=np.uint8))[:16]
    with gzip.open(path, "wb") as f:
        f.write(header)
        chunk = b"\0" * 2**20
        for _ in range(64):  # 64 MiB of zeros: a few kB on disk
            f.write(chunk)
    assert path.stat().st_size < 2**20
    with pytest.raises(DataFileError, match="more than 7,840,016 bytes once decompressed"):
        read_idx(path, expected_size=7_840_016)
    with pytest.raises(DataFileError, match="more than 1,000 bytes"):
        read_idx(path, expected_size=1000)


@pytest.mark.parametrize("train_size", [0, -100, 10**9, 2.5])
def test_train_size_is_checked(tiny_fashion_mnist, monkeypatch, train_size) -> None:
    """train_size=0 used to train on nothing and -100 on all but 100 images, quietly."""
    folder, md5, _ = tiny_fashion_mnist
    real = data.load_fashion_mnist
    monkeypatch.setattr(data, "load_fashion_mnist",
                        lambda split, root: real(split, root, checksums=md5))  # fmt: skip
    with pytest.raises(ValueError, match="train_size must be a whole number from 1 to 18 "):
        data.fashion_mnist_splits(train_size=train_size, val_size=2, root=folder, device="cpu")
    splits = data.fashion_mnist_splits(train_size=5, val_size=2, root=folder, device="cpu")
    assert len(splits.train[1]) == 5


# ----------------------------------------------------------------------------------
# Downloading (Colab's path): from a local HTTP server standing in for the mirror


@pytest.fixture
def mirror(tiny_fashion_mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve a copy of the tiny files over HTTP; the checksums are the tiny files'.
    Yields ``(url, served folder, list of requested paths)``."""
    folder, md5, arrays = tiny_fashion_mnist
    served = tmp_path / "served"
    shutil.copytree(folder, served)
    sizes = {name: len(idx_bytes(a)) for name, a in arrays.items()}
    monkeypatch.setattr(data, "FASHION_MNIST_FILES", {n: (md5[n], sizes[n]) for n in md5})
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "USER_CACHE_DIR", tmp_path / "no-cache")
    with serving(served) as (url, requested):
        yield url, served, requested


def test_ensure_downloads_into_the_named_folder_and_verifies(mirror, tmp_path, monkeypatch):
    url, served, requested = mirror
    target = tmp_path / "colab-data"
    target.mkdir()
    named(monkeypatch, target)
    monkeypatch.setenv(data.URL_ENV, url)
    with pytest.raises(DataNotFoundError):
        find_fashion_mnist()
    assert data.ensure_fashion_mnist() == target
    assert sorted(p.name for p in target.iterdir()) == sorted(
        f"{n}.gz" for n in data.FASHION_MNIST_FILES)
    assert len(requested) == 4
    tiny_md5 = {name: md5 for name, (md5, _) in data.FASHION_MNIST_FILES.items()}
    images, labels = data.load_fashion_mnist("test", checksums=tiny_md5)
    assert images.shape == (8, 28, 28) and labels.shape == (8,)
    # Found now: nothing is fetched again. A broken copy is fetched again.
    assert data.ensure_fashion_mnist() == target and len(requested) == 4
    (target / f"{NAME}.gz").write_bytes(b"\x1f\x8b broken")
    data.download_fashion_mnist(target)
    assert requested[4:] == [f"/{NAME}.gz"]
    data.check_fashion_mnist(target)


def test_download_of_a_wrong_file_keeps_nothing(mirror, tmp_path):
    url, served, _ = mirror
    (served / f"{NAME}.gz").write_bytes(b"\x1f\x8b not the file")
    target = tmp_path / "data"
    with pytest.raises(DataFileError, match=rf"{url}/{NAME}.gz is not the file"):
        data.download_fashion_mnist(target, url=url)
    assert not (target / f"{NAME}.gz").exists()
    assert not list(target.glob("*.part"))


def test_download_failure_names_the_address_and_the_way_out(mirror, tmp_path):
    url, _, _ = mirror
    with pytest.raises(DataNotFoundError, match=rf"could not download {url}/.*{data.URL_ENV}"):
        data.download_fashion_mnist(tmp_path / "data", url=url + "/missing")
    assert not list((tmp_path / "data").glob("*"))
