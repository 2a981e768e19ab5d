"""The Python packages of the environment repo2docker builds Binder's image on, as pip pins.

repo2docker (the tool behind mybinder.org) installs a repository's
``binder/requirements.txt`` into its own conda environment, which it creates from a lock
shipped inside the ``jupyter-repo2docker`` package
(``repo2docker/buildpacks/conda/environment.py-3.11-linux-64.lock``). That lock decides
which JupyterLab and Notebook a reader gets: repo2docker 2026.4 serves JupyterLab 4.4.9
and Notebook 7.4.7, whatever ``jupyterlab==4.*`` resolves to today. The Binder rehearsal
(tests/test_binder.py) installs these pins first, then ``binder/requirements.txt`` on top,
as repo2docker does, so it tests the JupyterLab readers really get.

    python -m booktools.repo2docker_lock            # the pins, one per line
    python -m booktools.repo2docker_lock --out F    # written to F

Standard library only (the wheel is a zip file): any Python 3.11 runs it.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The repo2docker release mybinder.org builds with; its lock decides the image's
#: JupyterLab. Raise it when Binder moves on (and rerun the rehearsal).
REPO2DOCKER = "jupyter-repo2docker==2026.4.0"

#: conda-forge packages whose PyPI name differs.
CONDA_TO_PYPI = {
    "brotli-python": "brotli",
    "jupyterhub-base": "jupyterhub",
    "nbconvert-core": "nbconvert",
    "python-fastjsonschema": "fastjsonschema",
}

#: conda-forge packages that hold no Python distribution of their own.
NOT_ON_PYPI = {"python", "python_abi", "jupyterhub-singleuser"}

_PACKAGE = re.compile(r"/(?P<subdir>noarch|linux-64)/(?P<file>[^/#]+)\.(?:conda|tar\.bz2)(?:#|$)")


def runtime_python() -> str:
    """The Python version binder/runtime.txt asks for, e.g. ``"3.11"``."""
    text = (ROOT / "binder" / "runtime.txt").read_text().strip()
    match = re.fullmatch(r"python-(\d+\.\d+)", text)
    if match is None:
        raise ValueError(f"binder/runtime.txt says {text!r}; expected python-X.Y")
    return match.group(1)


def parse_lock(text: str) -> dict[str, str]:
    """``{PyPI name: version}`` of the Python packages in a conda-lock ``@EXPLICIT`` file.

    A conda file name is ``name-version-build``; a Python package's build string starts
    with ``py`` (pure Python) or names a CPython ABI (``cp311``/``py311``). Packages of C
    libraries (openssl, libzmq, nodejs, ...) are left out: pip does not manage them.
    """
    pins: dict[str, str] = {}
    for line in text.splitlines():
        match = _PACKAGE.search(line)
        if match is None:
            continue
        name, version, build = match.group("file").rsplit("-", 2)
        if name in NOT_ON_PYPI:
            continue
        if not (build.startswith("py") or re.search(r"(cp|py)3\d+", build)):
            continue
        pins[CONDA_TO_PYPI.get(name, name)] = version
    for needed in ("jupyterlab", "notebook", "jupyter_server"):
        if needed not in pins:
            raise ValueError(f"the lock has no {needed}: is this repo2docker's conda lock?")
    return pins


def lock_text(python: str, download_dir: Path, pip: list[str] | None = None) -> str:
    """repo2docker's lock for ``python`` (e.g. ``"3.11"``), read from its wheel, which
    ``pip download`` fetches into ``download_dir`` (PyPI; no dependencies)."""
    pip = pip or [sys.executable, "-m", "pip"]
    version = REPO2DOCKER.split("==")[1]
    wheel_path = download_dir / f"jupyter_repo2docker-{version}-py3-none-any.whl"
    if not wheel_path.is_file():
        subprocess.run([*pip, "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", str(download_dir), REPO2DOCKER], check=True)  # fmt: skip
    member = f"repo2docker/buildpacks/conda/environment.py-{python}-linux-64.lock"
    with zipfile.ZipFile(wheel_path) as wheel:
        try:
            return wheel.read(member).decode()
        except KeyError:
            raise ValueError(
                f"{wheel_path.name} has no lock for Python {python} ({member})"
            ) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="write the pins here (default: stdout)")
    parser.add_argument("--python", default=None, help="default: binder/runtime.txt's")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        pins = parse_lock(lock_text(args.python or runtime_python(), Path(tmp)))
    text = "".join(f"{name}=={version}\n" for name, version in sorted(pins.items()))
    if args.out:
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
