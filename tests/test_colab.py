"""Open in Colab: each chapter as a notebook with a setup cell (booktools/colab_notebooks.py)
and a "Colab" launch button that opens it (booktools/colab.py).

The rehearsal (marker ``colab``) stands in for Colab without a network: a fresh virtual
environment that already has a torch (this environment's, linked in, not downloaded
again) and Colab's Jupyter stack but neither d2lcore nor the data; the setup cell's
install pointed at this checkout (``git+file://...@<commit>``, the form CI writes with
the GitHub address); Fashion-MNIST served by a local HTTP server. The softmax chapter's
notebook, from the book just built, then runs top to bottom.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from booktools import colab, colab_notebooks

from .conftest import (
    ROOT,
    git,
    run_process,
    serving,
    toc_pages,
)

CHAPTERS = [page for page in toc_pages() if page.startswith("chapters/")]
REHEARSED = "chapters/softmax_regression"


tool = colab_notebooks
ext = colab


def _notebook(*code: str) -> dict[str, Any]:
    cells = [{"cell_type": "code", "execution_count": 1, "id": f"c{i}", "metadata": {},
              "outputs": [{"output_type": "stream", "name": "stdout", "text": "out\n"}],
              "source": src} for i, src in enumerate(code)]  # fmt: skip
    return {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}


def _setup_cell(nb: dict[str, Any]) -> str:
    setup = [c for c in nb["cells"] if c["cell_type"] == "code"
             and tool.SETUP_TAG in c["metadata"].get("tags", [])]  # fmt: skip
    assert len(setup) == 1
    return str(setup[0]["source"])


# ----------------------------------------------------------------------------------
# The notebooks and the button


def test_setup_cell_comes_first_and_asks_only_for_what_the_page_uses():
    plain = _notebook("import torch\nx = torch.ones(2)")
    out = tool.colab_notebook(plain, source="d2lcore @ git+https://github.com/o/r@abc",
                              d2l="d2l==1.0.3", commit="abc" * 14, page="chapters/p")  # fmt: skip
    assert [c["cell_type"] for c in out["cells"]] == ["markdown", "code", "code"]
    setup = _setup_cell(out)
    assert out["cells"][1]["source"] == setup
    compile(setup, "setup", "exec")  # valid Python
    assert "git+https://github.com/o/r@abc" in setup
    assert "d2l==" not in setup and "ensure_fashion_mnist" not in setup
    assert out["cells"][2] == plain["cells"][0], "the page's cells and outputs are kept"
    assert out["metadata"]["kernelspec"]["name"] == "python3"

    page = _notebook("import d2l.torch as d2l", "splits = fashion_mnist_splits()")
    setup = _setup_cell(tool.colab_notebook(page, source="s", d2l="d2l==1.0.3", commit="c",
                                            page="chapters/p"))  # fmt: skip
    assert "install_if_missing('d2l', '--no-deps', 'd2l==1.0.3')" in setup.replace('"', "'")
    assert "ensure_fashion_mnist()" in setup


@pytest.mark.parametrize(
    ("cuda", "preset", "expected"),
    [(True, None, "gpu"), (True, "cpu", "cpu"), (False, None, None)],
)
def test_setup_cell_picks_the_gpu_profile_on_cuda_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, cuda: bool, preset: str | None, expected: str | None
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.delenv("D2L_PROFILE", raising=False)
    if preset is not None:
        monkeypatch.setenv("D2L_PROFILE", preset)
    installs: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: installs.append(cmd))  # none
    setup = tool.setup_source("d2lcore", d2l=None, fashion_mnist=False)
    exec(compile(setup, "setup", "exec"), {})  # d2lcore is importable here: no install
    assert installs == []
    assert os.environ.get("D2L_PROFILE") == expected


class FakePip:
    """Stands in for pip and for what it installs: ``importlib.util.find_spec`` finds
    ``d2lcore`` and ``d2l`` only once "installed" (or when ``installed`` says so)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, installed: set[str]) -> None:
        import importlib.util

        self.installed = set(installed)
        self.installs: list[list[str]] = []
        real = importlib.util.find_spec

        def find_spec(name: str, package: str | None = None) -> Any:
            if name in {"d2lcore", "d2l"} and name not in self.installed:
                return None
            return real(name, package)

        monkeypatch.setattr(importlib.util, "find_spec", find_spec)
        monkeypatch.setattr(subprocess, "run", self.run)

    def run(self, cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        args = cmd[cmd.index("--quiet") + 1 :]
        self.installs.append(args)
        self.installed.add("d2l" if "d2l==1.0.3" in args else "d2lcore")
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.mark.parametrize(
    ("installed", "expected"),
    [({"d2lcore", "d2l"}, []),
     ({"d2lcore"}, [["--no-deps", "d2l==1.0.3"]]),  # d2lcore there: d2l was never installed
     (set(), [["d2lcore @ git+x"], ["--no-deps", "d2l==1.0.3"]])],
    ids=["both-there", "d2l-missing", "both-missing"],
)  # fmt: skip
def test_setup_cell_installs_each_missing_package_on_its_own(
    monkeypatch: pytest.MonkeyPatch, installed: set[str], expected: list[list[str]],
    capsys: pytest.CaptureFixture[str],
):  # fmt: skip
    """Each install checks its own package: a d2lcore that is there no longer hides a
    missing d2l."""
    pip = FakePip(monkeypatch, installed)
    setup = tool.setup_source("d2lcore @ git+x", d2l="d2l==1.0.3", fashion_mnist=False)
    exec(compile(setup, "setup", "exec"), {})
    assert pip.installs == expected
    exec(compile(setup, "setup", "exec"), {})  # run again: nothing more to do
    assert pip.installs == expected
    assert capsys.readouterr().out.count("d2lcore from d2lcore @ git+x") == 2


def test_a_rerun_retries_the_failed_download_and_only_then_says_done(
    tiny_fashion_mnist, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):  # fmt: skip
    """The first run installs d2lcore and then fails to fetch the data (the mirror lacks a
    file). A rerun used to skip every step because d2lcore was there, print success, and
    leave the next cell to fail with DataNotFoundError: it retries the download, and
    success is printed only once the data are there."""
    import torch

    from d2lcore import datafiles

    folder, md5, arrays = tiny_fashion_mnist  # the tiny files stand for Fashion-MNIST
    sizes = {name: len(a.tobytes()) + 4 + 4 * a.ndim for name, a in arrays.items()}
    monkeypatch.setattr(datafiles, "FASHION_MNIST_FILES", {n: (md5[n], sizes[n]) for n in md5})
    monkeypatch.setattr(datafiles, "DEBIAN_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(datafiles, "USER_CACHE_DIR", tmp_path / "no-cache")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("D2L_PROFILE", raising=False)
    served = tmp_path / "served"
    shutil.copytree(folder, served)
    last = list(md5)[-1]
    (served / f"{last}.gz").rename(tmp_path / "held-back.gz")
    data = tmp_path / "data"
    monkeypatch.setenv("D2L_FASHION_MNIST_DIR", str(data))
    pip = FakePip(monkeypatch, installed=set())
    setup = tool.setup_source("d2lcore @ git+x", d2l=None, fashion_mnist=True)

    with serving(served) as (url, asked):
        monkeypatch.setenv("D2L_FASHION_MNIST_URL", url)
        with pytest.raises(datafiles.DataNotFoundError, match=rf"{last}.gz: the server "
                           "answered 404"):  # fmt: skip
            exec(compile(setup, "setup", "exec"), {})
        out = capsys.readouterr().out
        assert "Fashion-MNIST:" not in out and "d2lcore from" not in out
        assert pip.installs == [["d2lcore @ git+x"]]
        assert set(asked) == {f"/{n}.gz" for n in md5}  # three fetched and kept, one missing
        first = len(asked)  # (the server logs a 404 twice)

        (tmp_path / "held-back.gz").rename(served / f"{last}.gz")  # the mirror is back
        exec(compile(setup, "setup", "exec"), {})
        out = capsys.readouterr().out
        assert f"Fashion-MNIST: {data}" in out and "d2lcore from d2lcore @ git+x" in out
        assert asked[first:] == [f"/{last}.gz"], "only the missing file is fetched again"
        assert pip.installs == [["d2lcore @ git+x"]], "d2lcore is not installed twice"

        exec(compile(setup, "setup", "exec"), {})  # and again: nothing to do, same result
        assert "d2lcore from" in capsys.readouterr().out and len(asked) == first + 1
    datafiles.check_fashion_mnist(data)


def test_missing_build_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = tool.main(["--book", str(tmp_path), "--out", str(tmp_path / "nb"), "--commit", "c"])
    assert code == 1
    assert "build the book first" in capsys.readouterr().err


def test_colab_url_opens_the_notebook_on_the_colab_branch():
    url = ext.colab_url("https://github.com/org/book", "colab", "chapters/mlp")
    assert url == "https://colab.research.google.com/github/org/book/blob/colab/chapters/mlp.ipynb"
    with pytest.raises(ValueError, match="GitHub only"):
        ext.colab_url("https://gitlab.com/org/book", "colab", "chapters/mlp")


@pytest.mark.book
def test_every_chapter_has_a_colab_button_and_a_notebook(built_book: Path, tmp_path: Path):
    import yaml

    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    branch = config["sphinx"]["config"]["d2l_colab_branch"]
    for page in CHAPTERS:
        html = (built_book / f"{page}.html").read_text()
        expected = ext.colab_url(config["repository"]["url"], branch, page)
        assert f'href="{expected}"' in html, f"{page} has no Colab button to {expected}"
    assert "colab.research.google.com" not in (built_book / "intro.html").read_text()
    written = tool.write_notebooks(built_book.parent, tmp_path, source="d2lcore", commit="c")
    assert [p.relative_to(tmp_path).as_posix() for p in written] == [
        f"{p}.ipynb" for p in CHAPTERS]
    for path in written:
        nb = json.loads(path.read_text())
        outputs = sum(len(c.get("outputs", [])) for c in nb["cells"])
        assert outputs > 0, f"{path.name} has no outputs"


# ----------------------------------------------------------------------------------
# The rehearsal


def _torch_closure() -> list[metadata.Distribution]:
    """torch and every distribution it requires on this machine, recursively."""
    seen: dict[str, metadata.Distribution] = {}
    todo = ["torch"]
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in seen:
            continue
        seen[key] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return list(seen.values())


def _link_torch(folder: Path) -> None:
    """``folder`` gets a link to each top-level file or package of torch's closure."""
    folder.mkdir()
    for dist in _torch_closure():
        base = Path(str(dist.locate_file("")))
        for name in {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (folder / name).exists() and (base / name).exists():
                (folder / name).symlink_to(base / name)


@contextlib.contextmanager
def fashion_mnist_mirror() -> Iterator[tuple[str, list[str]]]:
    """A local HTTP server with the four ``.gz`` files; yields its URL and the paths asked."""
    from d2lcore.data import FASHION_MNIST_FILES, find_fashion_mnist

    found = find_fashion_mnist()
    served = Path(tempfile.mkdtemp(prefix="d2l-mirror-"))
    for name in FASHION_MNIST_FILES:
        shutil.copy(found / f"{name}.gz", served)
    try:
        with serving(served) as (url, asked):
            yield f"{url}/", asked
    finally:
        shutil.rmtree(served, ignore_errors=True)


PROBE = """\
import json, os, importlib.metadata as md, torch, d2lcore
from d2lcore.data import find_fashion_mnist
print("PROBE " + json.dumps({
    "torch": torch.__file__, "d2lcore": d2lcore.__file__,
    "direct_url": json.loads(md.distribution("d2lcore").read_text("direct_url.json")),
    "data": str(find_fashion_mnist()), "profile": os.environ.get("D2L_PROFILE")}))
"""


@dataclass
class ColabRun:
    """What the rehearsal did, for the test to check (its folder is gone by then)."""

    tmp: Path
    venv: Path
    commit: str
    had_d2lcore: bool  # before the setup cell ran
    result: subprocess.CompletedProcess[str] | None = None
    probe: dict[str, Any] | None = None
    asked: list[str] = field(default_factory=list)


@pytest.fixture(scope="session")
def colab_run(built_book: Path) -> ColabRun:
    """The softmax chapter's notebook, from the book built for the tests, run top to
    bottom in a stand-in for Colab (see the module's docstring)."""
    tmp = Path(tempfile.mkdtemp(prefix="d2l-colab-"))
    try:
        with fashion_mnist_mirror() as (url, asked):
            run = _run_in_colab_stand_in(built_book, tmp, url)
            run.asked = list(asked)
        return run
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run_in_colab_stand_in(built_book: Path, tmp: Path, url: str) -> ColabRun:
    venv = tmp / "env"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    # Colab's own torch: this environment's, through a .pth (pip sees it installed).
    _link_torch(tmp / "colab-torch")
    (Path(purelib) / "colab_torch.pth").write_text(f"{tmp / 'colab-torch'}\n")
    env = {k: v for k, v in os.environ.items()
           if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"}
           and not k.startswith(("D2L_", "JUPYTER"))}  # fmt: skip
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        VIRTUAL_ENV=str(venv), HOME=str(tmp / "home"),
        D2L_FASHION_MNIST_DIR=str(tmp / "data"), D2L_FASHION_MNIST_URL=url,
        D2L_CACHE_DIR=str(tmp / "cache"),
        # pip clones this checkout, which CI's root may not own (see conftest.git).
        GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="safe.directory", GIT_CONFIG_VALUE_0="*",
    )  # fmt: skip
    (tmp / "data").mkdir()
    # What Colab has before the first cell runs: a current pip, its Jupyter stack and
    # numpy.
    run_process([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                env=env).check_returncode()  # fmt: skip
    run_process([str(python), "-m", "pip", "install", "--quiet", "ipykernel", "nbclient",
                 "nbformat", "numpy"], env=env).check_returncode()  # fmt: skip
    before = run_process([str(python), "-c", "import d2lcore"], env=env)

    commit = git("rev-parse", "HEAD").stdout.decode().strip()
    run = ColabRun(tmp=tmp, venv=venv, commit=commit, had_d2lcore=before.returncode == 0)
    source = f"d2lcore @ git+file://{ROOT}@{commit}"
    [notebook] = tool.write_notebooks(built_book.parent, tmp / "nb", source=source,
                                      commit=commit, pages=[REHEARSED])  # fmt: skip
    nb = json.loads(notebook.read_text())
    nb["cells"].append({"cell_type": "code", "execution_count": None, "id": "probe",
                        "metadata": {}, "outputs": [], "source": PROBE})  # fmt: skip
    notebook.write_text(json.dumps(nb))
    # Run by the book's one notebook runner (booktools.notebooks, importable from the
    # repository's root; d2lcore is not: it lives under src/), in the notebook's folder.
    run.result = run_process([str(python), "-m", "booktools.notebooks", str(notebook),
                              "--timeout", "900"], cwd=ROOT, env=env, timeout=1800)  # fmt: skip
    if run.result.returncode == 0:
        executed = json.loads(notebook.read_text())
        streams = [o.get("text", "") for c in executed["cells"] if c["cell_type"] == "code"
                   for o in c["outputs"]]  # fmt: skip
        text = "".join("".join(t) if isinstance(t, list) else t for t in streams)
        if "PROBE " in text:
            run.probe = json.loads(text.split("PROBE ", 1)[1].splitlines()[0])
    return run


@pytest.mark.colab
def test_chapter_notebook_runs_in_a_colab_like_environment(built_book: Path,
                                                           colab_run: ColabRun):  # fmt: skip
    run = colab_run
    assert not run.had_d2lcore, "the stand-in for Colab already has d2lcore"
    assert run.result is not None and run.result.returncode == 0, (
        (run.result.stdout + run.result.stderr)[-6000:] if run.result else run)
    probe = run.probe
    assert probe is not None, "the notebook's last cell printed no PROBE line"
    assert Path(probe["torch"]).parent.parent == run.tmp / "colab-torch", (
        "the setup cell replaced the torch that was there", probe)
    assert Path(probe["d2lcore"]).is_relative_to(run.venv), probe
    assert probe["direct_url"]["vcs_info"]["commit_id"] == run.commit, probe
    assert probe["data"] == str(run.tmp / "data"), probe
    assert sorted(run.asked) == sorted(f"/{n}.gz" for n in _fashion_mnist_names()), run.asked
    assert probe["profile"] is None  # no CUDA here: the page's default, cpu


def _fashion_mnist_names() -> list[str]:
    from d2lcore.data import FASHION_MNIST_FILES

    return list(FASHION_MNIST_FILES)
