"""Binder's environment for the rehearsal (``tests/test_binder.py``, marker ``binder``),
built the way repo2docker builds it, in a folder of its own:

    FOLDER/repo   a copy of the repository's files, as Binder clones them
    FOLDER/env    the virtual environment: repo2docker's own lock (its pip, JupyterLab,
                  Notebook, ... at the versions Binder's image has), then
                  ``pip install -r binder/requirements.txt``, then binder/postBuild
    FOLDER/home   the user's Jupyter folders, empty as on Binder
    FOLDER/cache  the grid cache the pages train into

``make test-binder`` builds it (beside the book build: pip needs little of the cores),
seeds its grid cache from the book build's, runs the tests, then removes it (several GB):

    python -m tests.binder_env build FOLDER
    python -m tests.binder_env seed FOLDER    # the grid cache: a copy of the book build's
    python -m tests.binder_env remove FOLDER

Run alone, ``pytest -m binder`` builds one itself (``$D2L_BINDER_ENV`` names a built one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from booktools import repo2docker_lock

from .conftest import ROOT, git, run_process

BINDER = ROOT / "binder"
#: What a built environment's folder holds once every step succeeded.
READY = "ready.json"


@dataclass
class BinderEnv:
    repo: Path  # a copy of the repository's files, as Binder clones them
    prefix: Path  # the virtual environment
    env: dict[str, str]  # what every command here runs with
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def folder(self) -> Path:
        return self.prefix.parent

    @property
    def python(self) -> Path:
        return self.prefix / "bin" / "python"

    def run(self, step: str, cmd: list[str | Path], *, timeout: float = 1200,
            check: bool = True) -> subprocess.CompletedProcess[str]:  # fmt: skip
        """Run ``cmd`` in the copy with the environment's bin/ first on PATH; time it
        under ``step`` and, with ``check``, fail with its output when it fails."""
        start = time.perf_counter()
        try:
            result = run_process([str(c) for c in cmd], cwd=self.repo, env=self.env,
                                 timeout=timeout)  # fmt: skip
        except subprocess.TimeoutExpired as stalled:
            pytest.fail(f"{step} did not finish in {timeout:.0f} s "
                        f"({' '.join(map(str, cmd))}); its last output:\n"
                        f"{((stalled.stdout or '') + (stalled.stderr or ''))[-4000:]}",
                        pytrace=False)  # fmt: skip
        self.seconds[step] = self.seconds.get(step, 0.0) + time.perf_counter() - start
        if check and result.returncode != 0:
            pytest.fail(f"{step} failed ({' '.join(map(str, cmd))}):\n"
                        f"{(result.stdout + result.stderr)[-6000:]}", pytrace=False)  # fmt: skip
        return result


def at(folder: Path) -> BinderEnv:
    """The environment in ``folder`` (built or not), with what its commands run with."""
    prefix = folder / "env"
    env = {k: v for k, v in os.environ.items()
           if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
           and not k.startswith(("D2L_", "JUPYTER"))}  # fmt: skip
    env.update(
        PATH=f"{prefix / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(prefix),
        # The user's Jupyter folders start empty on Binder; keep this machine's out.
        JUPYTER_CONFIG_DIR=str(folder / "home" / ".jupyter"),
        JUPYTER_DATA_DIR=str(folder / "home" / ".local" / "share" / "jupyter"),
        D2L_CACHE_DIR=str(folder / "cache"),
    )
    return BinderEnv(repo=folder / "repo", prefix=prefix, env=env)


def load(folder: Path) -> BinderEnv:
    """The environment ``build`` finished in ``folder``; a clear failure if it did not."""
    if not (folder / READY).is_file():
        pytest.fail(f"no finished Binder environment in {folder}: build it with "
                    f"`python -m tests.binder_env build {folder}`", pytrace=False)  # fmt: skip
    be = at(folder)
    be.seconds = json.loads((folder / READY).read_text())["seconds"]
    return be


def copy_repository(dest: Path, source_root: Path = ROOT) -> None:
    """Copy what a clone has: tracked files and new files git does not ignore.

    Works whoever owns the checkout (CI runs the tests as root on a checkout owned by the
    runner's user): see ``conftest.git``."""
    listing = git("ls-files", "-z", "--cached", "--others", "--exclude-standard",
                  cwd=source_root)  # fmt: skip
    for name in sorted(set(listing.stdout.decode().split("\0")) - {""}):
        source = source_root / name
        if source.is_file():  # not deleted in the working tree
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def python_for_runtime() -> str:
    version = (BINDER / "runtime.txt").read_text().strip().removeprefix("python-")
    python = shutil.which(f"python{version}")
    if python is None and f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        python = sys.executable
    if python is None:
        pytest.fail(f"binder/runtime.txt asks for Python {version}; install python{version}",
                    pytrace=False)  # fmt: skip
    return python


def repo2docker_pins() -> dict[str, str]:
    """``{name: version}`` of the Python packages of repo2docker's environment for
    binder/runtime.txt's Python (the wheel is downloaded from PyPI once a machine)."""
    wheels = Path(tempfile.gettempdir()) / "d2l-repo2docker-wheel"
    wheels.mkdir(exist_ok=True)
    tool = repo2docker_lock
    return dict(tool.parse_lock(tool.lock_text(tool.runtime_python(), wheels)))


def build(folder: Path) -> BinderEnv:
    """Binder's environment, built from binder/ alone into ``folder`` (emptied first)."""
    remove(folder)
    be = at(folder)
    try:
        copy_repository(be.repo)
        be.run("python -m venv", [python_for_runtime(), "-m", "venv", be.prefix])
        # repo2docker's own environment, from the lock inside the jupyter-repo2docker
        # package (booktools/repo2docker_lock.py); binder/requirements.txt is installed on
        # top of it, as repo2docker does.
        pins = folder / "repo2docker-pins.txt"
        pins.write_text("".join(f"{name}=={version}\n"
                                for name, version in repo2docker_pins().items()))  # fmt: skip
        pip: list[str | Path] = [be.python, "-m", "pip", "install", "--retries", "1",
                                 "--timeout", "15"]  # fmt: skip
        be.run("pip install repo2docker's lock", [*pip, "--no-deps", "-r", pins])
        # What repo2docker runs, less --no-cache-dir (local files here).
        be.run("pip install -r binder/requirements.txt",
               [*pip, "-r", "binder/requirements.txt"])  # fmt: skip
        be.run("binder/postBuild", ["./binder/postBuild"])
    except BaseException:
        remove(folder)
        raise
    (folder / READY).write_text(json.dumps({"seconds": be.seconds}))
    return be


def seed(folder: Path) -> None:
    """Start the environment's grid cache as a copy of the book build's (the same code,
    data and torch, so the same keys: see tests/test_binder.py); with
    ``D2L_REHEARSAL_COLD=1``, empty, as on a reader's first visit."""
    cache = Path(at(folder).env["D2L_CACHE_DIR"])
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    if os.environ.get("D2L_REHEARSAL_COLD") == "1":
        return
    source = Path(os.environ.get("D2L_CACHE_DIR") or ROOT / ".d2l_cache")
    if source.is_dir():
        shutil.copytree(source, cache, dirs_exist_ok=True)


def remove(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in {"build", "seed", "remove"}:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(args[1]).resolve()
    try:
        if args[0] == "build":
            be = build(folder)
            times = {step: round(s, 1) for step, s in be.seconds.items()}
            print(f"Binder's environment is in {folder}; seconds: {json.dumps(times)}")
        elif args[0] == "seed":
            seed(folder)
        else:
            remove(folder)
    except pytest.fail.Exception as failure:
        print(f"tests.binder_env {args[0]}: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
