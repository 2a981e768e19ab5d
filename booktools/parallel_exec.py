"""Sphinx extension: execute the pages that need it several at a time, before reading.

myst-nb executes a page when Sphinx reads it, so one page after another: a clean build
of the book keeps one core busy while the other waits. Before Sphinx reads anything,
this extension reads each page to be read the way myst-nb will (same reader, same
configuration: ``myst_nb.core.read.create_nb_reader``, from myst-nb's API reference),
asks jupyter-cache whether its cells are cached, and executes the pages that are not
(``booktools.notebooks``, nbclient as jupyter-cache runs it) in worker processes,
``D2L_EXECUTE_JOBS`` at a time (default: the number of cores, at most 4). Each executed
notebook goes into the cache as myst-nb would put it there, so when Sphinx reads the
page, myst-nb finds it cached and executes nothing.

Each kernel gets ``OMP_NUM_THREADS`` = cores / jobs (unless the variable is set), so
that the kernels share the cores instead of each starting a thread per core. The pages
start longest first (``exec_order.py``).

A page that fails here is not cached: myst-nb then executes it itself when it reads it
and reports the failure as it always does. With fewer than two pages to execute, or
``D2L_EXECUTE_JOBS=1``, this extension does nothing and myst-nb executes as usual.

The pages executed here are listed in the cache folder (``d2l-executed.json``), so that
``booktools/exec_report.py`` reports them as executed in this build, not as cache hits.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import nullcontext, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from sphinx.application import Sphinx
from sphinx.environment import BuildEnvironment
from sphinx.util import logging

from booktools import notebooks
from booktools.exec_order import longest_first, threads_per_job

LOGGER = logging.getLogger(__name__)
JOBS_ENV = "D2L_EXECUTE_JOBS"
#: In the execution cache folder: the cache records this build's parallel step wrote.
EXECUTED_FILE = "d2l-executed.json"
MAX_DEFAULT_JOBS = 4


def default_jobs() -> int:
    """``D2L_EXECUTE_JOBS``, or the number of cores (at most 4)."""
    value = os.environ.get(JOBS_ENV, "").strip()
    if value:
        try:
            jobs = int(value)
        except ValueError:
            raise ValueError(f"{JOBS_ENV} must be a whole number of pages executed at a "
                             f"time (1 turns parallel execution off), got {value!r}") from None
        if jobs < 1:
            raise ValueError(f"{JOBS_ENV} must be at least 1, got {jobs}")
        return jobs
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_JOBS))


@dataclass
class Pending:
    """A page whose cells are not in the cache: what executing and caching it needs."""

    docname: str
    path: Path
    notebook: Any  # nbformat.NotebookNode, as myst-nb's reader made it
    read_fmt: dict | None
    cwd: str | None  # None: a temporary folder (execution_in_temp)
    timeout: int | None
    allow_errors: bool


def _execute(notebook: Any, cwd: str | None, timeout: int | None, allow_errors: bool,
             threads: int) -> tuple[Any, float, str | None]:  # fmt: skip
    """In a worker process: execute ``notebook`` as myst-nb's cache client does
    (:func:`booktools.notebooks.execute`); return it with its outputs, the seconds it
    took and the traceback of a failure (or None)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # the kernel inherits it
    folder = tempfile.TemporaryDirectory() if cwd is None else nullcontext(cwd)
    with folder as where:
        result = notebooks.execute(notebook, cwd=where, timeout=timeout,
                                   allow_errors=allow_errors)  # fmt: skip
    return result.notebook, result.seconds, result.failure


def _execute_alone(context: Any, *args: Any) -> tuple[Any, float, str | None]:
    """:func:`_execute` in a worker process of its own: a worker that dies (killed, out of
    memory) fails its own page only, not the pages of a shared pool."""
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        return pool.submit(_execute, *args).result()


def _why(failure: str) -> str:
    """The last line of a failure's traceback: what the log says about it."""
    lines = [line.strip() for line in failure.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def pending_pages(env: BuildEnvironment, docnames: list[str]) -> list[Pending]:
    """The pages among ``docnames`` that myst-nb would execute (cache mode, not excluded,
    cells not in the cache), read exactly as myst-nb reads them."""
    from jupyter_cache import get_cache
    from myst_nb.core.read import create_nb_reader

    base = getattr(env, "mystnb_config", None)
    md_config = getattr(env, "myst_config", None)
    if base is None or md_config is None or base.execution_mode != "cache":
        return []
    cache = get_cache(base.execution_cache_path or ".jupyter_cache")
    pending = []
    for docname in docnames:
        path = Path(env.doc2path(docname))
        if path.suffix not in {".md", ".ipynb"} or not path.is_file():
            continue
        content = path.read_text(encoding="utf8")
        reader = create_nb_reader(str(path), md_config, base, content)
        if reader is None:
            continue  # plain Markdown: nothing to execute
        notebook = reader.read(content)
        if not any(cell.cell_type == "code" for cell in notebook.cells):
            continue
        nb_config = base
        kernel = notebook.metadata.get("kernelspec", {}).get("name")  # myst-nb's aliases
        for pattern, alias in (base.kernel_rgx_aliases or {}).items():
            if kernel is not None and re.fullmatch(pattern, kernel):
                notebook.metadata["kernelspec"]["name"] = alias
                break
        if base.metadata_key in notebook.metadata:  # a page's own execution settings
            overrides = json.loads(json.dumps(notebook.metadata[base.metadata_key]))
            overrides.pop("output_folder", None)
            with suppress(Exception):  # myst-nb warns about bad overrides when it reads
                nb_config = base.copy(**overrides)
        if nb_config.execution_mode != "cache":
            continue
        posix = PurePosixPath(path.as_posix())
        if any(posix.match(p) for p in nb_config.execution_excludepatterns or ()):
            continue
        try:
            cache.match_cache_notebook(notebook)
            continue  # cached: myst-nb will use it
        except KeyError:
            pass
        pending.append(Pending(
            docname=docname, path=path, notebook=notebook, read_fmt=reader.read_fmt,
            cwd=None if nb_config.execution_in_temp else str(path.parent),
            timeout=nb_config.execution_timeout,
            allow_errors=nb_config.execution_allow_errors,
        ))  # fmt: skip
    return pending


def execute_pending(cache_path: str, pending: list[Pending], jobs: int) -> list[int]:
    """Execute ``pending`` ``jobs`` at a time and cache the notebooks that succeed in the
    jupyter-cache at ``cache_path``, as myst-nb does; returns the cache records written."""
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn

    cache = get_cache(cache_path)
    threads = threads_per_job(jobs)
    by_name = {p.docname: p for p in pending}
    order = [by_name[name] for name in longest_first(by_name)]
    LOGGER.info(f"executing {len(order)} pages, {jobs} at a time ({threads} thread(s) "
                f"each): {', '.join(p.docname for p in order)}")  # fmt: skip
    records = []
    start = time.perf_counter()
    # "spawn": a fresh interpreter per worker, not a fork of Sphinx and its threads; one
    # worker per page, ``jobs`` at a time (the threads only wait for them).
    context = multiprocessing.get_context("spawn")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {
            pool.submit(_execute_alone, context, p.notebook, p.cwd, p.timeout, p.allow_errors,
                        threads): p
            for p in order
        }  # fmt: skip
        for future in as_completed(futures):
            page = futures[future]
            try:
                notebook, seconds, failure = future.result()
            except BrokenProcessPool:
                notebook, seconds, failure = None, 0.0, (
                    "its worker process died (killed, or out of memory)")
            except Exception as error:  # the worker could not start or send its result
                notebook, seconds, failure = None, 0.0, f"{type(error).__name__}: {error}"
            if failure is not None:
                LOGGER.info(f"{page.docname} failed in parallel execution ({_why(failure)}); "
                            "it runs again as it is read, which reports any error")  # fmt: skip
                continue
            stage = cache.add_nb_to_project(str(page.path), read_data=page.read_fmt)
            record = cache.cache_notebook_bundle(
                CacheBundleIn(notebook, stage.uri, data={"execution_seconds": seconds}),
                check_validity=False, overwrite=True,
            )  # fmt: skip
            records.append(record.pk)
            LOGGER.info(f"executed {page.docname} in {seconds:.1f} s")
    LOGGER.info(f"parallel execution: {len(records)} of {len(order)} pages in "
                f"{time.perf_counter() - start:.1f} s")  # fmt: skip
    return records


def _before_read(app: Sphinx, env: BuildEnvironment, docnames: list[str]) -> None:
    config = getattr(env, "mystnb_config", None)
    if config is None or config.execution_mode != "cache":
        return
    listing = Path(config.execution_cache_path or ".jupyter_cache") / EXECUTED_FILE
    listing.unlink(missing_ok=True)  # a record of the last build only
    jobs = default_jobs()
    if jobs < 2:
        return
    pending = pending_pages(env, sorted(docnames))
    if len(pending) < 2:
        return  # nothing to gain: myst-nb executes the page as it reads it
    records = execute_pending(config.execution_cache_path or ".jupyter_cache", pending,
                              min(jobs, len(pending)))  # fmt: skip
    listing.parent.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps({"records": records}))


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("env-before-read-docs", _before_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
