"""How long each page of the last book build took to execute, as Markdown and JSON.

myst-nb records one entry per executed page in the Sphinx environment that Jupyter Book
saves after a build (``_build/.doctrees/environment.pickle``)::

    env.nb_metadata[docname]["exec_data"] = {
        "mtime": float,          # POSIX time the execution finished (or the cache record's)
        "runtime": float | None, # seconds
        "method": str,           # myst-nb's execution mode: force, auto, cache or inline
        "succeeded": bool,
        "error": str | None,     # exception class name when it failed
        "traceback": str | None,
    }

This is what myst-nb's ``nb-exec-table`` directive shows. In ``cache`` mode a page is
either executed or taken from jupyter-cache; the two differ only in ``mtime``, which for
a cache hit is the creation time of the cache record, so the report matches it against
the cache to say which.

Usage::

    python -m booktools.exec_report                       # table of _build on stdout
    python -m booktools.exec_report --build _build --markdown report.md --json report.json
    python -m booktools.exec_report --quiet --json report.json   # files only

The header names the build profile (``D2L_PROFILE``), the device and the torch version of
the environment the report runs in, so run it where the book was built (the same job in
CI): telling a cache hit needs the build's time zone too, as myst-nb stores a hit's time
as local time.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BUILD_HINT = "build the book first with `make book` (or `jupyter-book build . --all`)"


class ReportError(Exception):
    """The build cannot be reported on; the message says why and what to do."""


@dataclass(frozen=True)
class PageRun:
    page: str
    method: str  # executed | cached | unknown
    runtime_s: float | None
    succeeded: bool
    error: str | None
    finished: str  # ISO 8601, UTC


@dataclass(frozen=True)
class Report:
    build: str
    generated: str
    profile: str
    device: str
    device_name: str
    torch: str
    execution_mode: str
    pages: list[PageRun]

    @property
    def total_runtime_s(self) -> float:
        return sum(p.runtime_s for p in self.pages if p.runtime_s is not None)

    @property
    def failed(self) -> list[str]:
        return [p.page for p in self.pages if not p.succeeded]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["total_runtime_s"] = self.total_runtime_s
        data["failed"] = self.failed
        return data


def load_environment(build: Path) -> Any:
    """The Sphinx build environment that Jupyter Book saved in ``build``."""
    pickle_path = build / ".doctrees" / "environment.pickle"
    if not pickle_path.is_file():
        raise ReportError(f"no book build found: {pickle_path} does not exist; {BUILD_HINT}")
    try:
        with pickle_path.open("rb") as f:
            return pickle.load(f)  # our own build output, not untrusted data
    except Exception as error:  # an old or foreign build, or a partial write
        raise ReportError(
            f"could not read {pickle_path} ({type(error).__name__}: {error}); it was written "
            f"by another Sphinx/myst-nb version or the build was interrupted; {BUILD_HINT}"
        ) from error


#: In the cache folder: the records the build's parallel step executed and wrote
#: (booktools/parallel_exec.py); myst-nb then reads them as cache hits.
EXECUTED_FILE = "d2l-executed.json"


def _cache_times(cache_path: Path) -> set[float] | None:
    """Creation times of the records in a jupyter-cache folder that were there before
    the last build (not executed by it); None when there is no cache."""
    if not (cache_path / "global.db").is_file():
        return None  # get_cache() would create an empty cache here: don't
    from jupyter_cache import get_cache

    try:
        executed = set(json.loads((cache_path / EXECUTED_FILE).read_text())["records"])
    except (OSError, ValueError, KeyError, TypeError):
        executed = set()
    return {record.created.timestamp() for record in get_cache(cache_path).list_cache_records()
            if record.pk not in executed}  # fmt: skip


def _method(mode: str, mtime: float, cache_times: set[float] | None) -> str:
    if mode != "cache":
        return "executed"  # force, auto and inline run the notebook in the build
    if cache_times is None:
        return "unknown"
    # myst-nb sets a hit's mtime to `record.created.timestamp()`, the very computation
    # done here; an executed page gets the time after the record was written, and one
    # the parallel step executed is left out of cache_times.
    return "cached" if mtime in cache_times else "executed"


def _runtime_environment() -> tuple[str, str, str, str]:
    """(profile, device type, device name, torch version) of this process."""
    import torch

    from d2lcore.device import get_device
    from d2lcore.profile import current

    device = get_device()
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{os.cpu_count()} CPU cores"
    return current().name, device.type, name, torch.__version__


def collect(build: Path) -> Report:
    """Read the execution records of the build in ``build`` (the ``_build`` folder)."""
    env = load_environment(build)
    metadata: dict[str, dict[str, Any]] = getattr(env, "nb_metadata", {}) or {}
    runs = {doc: data["exec_data"] for doc, data in metadata.items() if data.get("exec_data")}
    if not runs:
        raise ReportError(
            f"the build in {build} executed no notebook (myst-nb recorded no execution "
            "data); check `execute: execute_notebooks` in _config.yml and rebuild with "
            "`jupyter-book build . --all`"
        )
    nb_config = getattr(env, "mystnb_config", None)
    mode = str(getattr(nb_config, "execution_mode", "") or next(iter(runs.values()))["method"])
    cache_times = None
    if mode == "cache":
        recorded = getattr(nb_config, "execution_cache_path", "")
        cache_path = Path(recorded) if recorded else build / ".jupyter_cache"
        if not cache_path.is_dir():  # the build folder was moved: look beside it
            cache_path = build / ".jupyter_cache"
        cache_times = _cache_times(cache_path)

    pages = []
    for doc, data in sorted(runs.items()):
        mtime = float(data["mtime"])
        method = _method(str(data["method"]), mtime, cache_times)
        if method == "cached":
            # jupyter-cache stores UTC without a zone and myst-nb reads it as local time.
            finished = datetime.fromtimestamp(mtime).replace(tzinfo=UTC)
        else:
            finished = datetime.fromtimestamp(mtime, UTC)
        pages.append(
            PageRun(
                page=doc,
                method=method,
                runtime_s=None if data["runtime"] is None else float(data["runtime"]),
                succeeded=bool(data["succeeded"]),
                error=data.get("error"),
                finished=finished.isoformat(timespec="seconds"),
            )
        )
    profile, device, device_name, torch_version = _runtime_environment()
    return Report(
        build=str(build),
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        profile=profile,
        device=device,
        device_name=device_name,
        torch=torch_version,
        execution_mode=mode,
        pages=pages,
    )


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def to_markdown(report: Report) -> str:
    """The report as a Markdown header and table (GitHub-flavoured)."""
    ok = sum(p.succeeded for p in report.pages)
    lines = [
        "## Notebook execution times",
        "",
        f"- profile: `{report.profile}` (`D2L_PROFILE`)",
        f"- device: `{report.device}` ({report.device_name})",
        f"- torch: `{report.torch}`",
        f"- myst-nb execution mode: `{report.execution_mode}`",
        f"- report written: {report.generated}",
        "",
        "| page | method | runtime (s) | succeeded |",
        "|---|---|---:|---|",
    ]
    for p in report.pages:
        status = "yes" if p.succeeded else f"**no** ({p.error or 'error'})"
        lines.append(f"| {p.page} | {p.method} | {_seconds(p.runtime_s)} | {status} |")
    lines.append(
        f"| **total** ({len(report.pages)} pages) | | **{report.total_runtime_s:.2f}** "
        f"| {ok}/{len(report.pages)} |"
    )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path("_build"),
                        help="the book's build folder (default: _build)")  # fmt: skip
    parser.add_argument("--markdown", type=Path, help="also write the Markdown table here")
    parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")
    args = parser.parse_args(argv)
    try:
        report = collect(args.build)
    except ReportError as error:
        print(f"exec_report: {error}", file=sys.stderr)
        return 2
    text = to_markdown(report)
    if not args.quiet:
        sys.stdout.write(text)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
