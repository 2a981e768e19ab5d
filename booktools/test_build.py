"""The book built for the tests, as CI builds it: every cell executed, every warning an
error, into a folder of its own (``_build/test``, so never the reader's ``_build/html``),
with its log beside it. ``make test-build`` runs this; the book and browser stages test
what it wrote (``tests/conftest.py``'s ``built_book``).

A build that runs past its limit is stopped, with its kernels, and fails with what it was
waiting for: the pages still executing, or the page Sphinx was reading. A cell has
nbclient's own limit (``_config.yml``'s ``execute.timeout``), but a build has been seen to
stall past it with the kernel and nbclient both idle; it is not run a second time, since a
retry hides a stall and doubles the worst case.

    python -m booktools.test_build [OUT] [--limit-min 40]

The HTML is in ``OUT/_build/html``, the log in ``OUT/_build/build.log``. The exit status is the
build's (1 when it was stopped).
"""

from __future__ import annotations

import argparse
import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "_build" / "test"
#: The whole build's limit: a clean build takes 4 min on an idle 2-core machine, about 11
#: while the other stages of ``make test`` share the cores.
DEFAULT_LIMIT_MIN = 40.0

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def html_folder(out: Path = DEFAULT_OUT) -> Path:
    """Where the build into ``out`` puts its HTML."""
    return out / "_build" / "html"


def command(out: Path | None, source: Path = ROOT) -> list[str]:
    """The build as CI runs it (every page read, every warning an error, the other pages
    still built after one fails) of the book in ``source`` into ``out`` (``None``: into
    ``source`` itself); the tests' small books are built with it too."""
    script = Path(sys.executable).parent / "jupyter-book"
    # Where Jupyter Book came as an unpacked wheel (a bare GPU machine) it has no script.
    run_main = "import sys; from jupyter_book.cli.main import main; sys.exit(main())"
    jupyter_book = [str(script)] if script.is_file() else [sys.executable, "-c", run_main]
    cmd = [*jupyter_book, "build", str(source), "--all", "-W", "--keep-going"]
    return cmd if out is None else [*cmd, "--path-output", str(out)]


def waiting_for(lines: Iterable[str]) -> str:
    """What a build whose log is ``lines`` was doing last: the pages its parallel
    execution started and had not finished (``parallel_exec``'s log), else the page
    Sphinx was reading, else the last line."""
    executing: list[str] = []
    reading = last = ""
    for raw in lines:
        line = _ANSI.sub("", raw).strip()
        if not line:
            continue
        last = line
        if match := re.match(r"executing \d+ pages?, .*?: (.*)$", line):
            executing = [page.strip() for page in match.group(1).split(",")]
        elif match := re.match(r"(\S+) failed in parallel execution", line):
            executing = [p for p in executing if p != match.group(1)]
        elif match := re.match(r"executed (\S+) in ", line):
            executing = [p for p in executing if p != match.group(1)]
        elif line.startswith("parallel execution:"):
            executing = []
        elif match := re.match(r"reading sources\.\.\. \[\s*\d+%\] (\S+)", line):
            reading = match.group(1)
    if executing:
        return "executing " + ", ".join(executing)
    if reading:
        return f"reading (and executing) {reading}"
    return f"the step after: {last}" if last else "its first output"


def build(out: Path, limit_s: float, source: Path = ROOT) -> int:
    """Build the book in ``source`` into ``out``, streaming the log to stdout and
    ``out/_build/build.log``."""
    log_path = out / "_build" / "build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("D2L_CACHE_DIR", str(ROOT / ".d2l_cache"))
    lines: list[str] = []
    start = time.monotonic()
    proc = subprocess.Popen(command(out, source), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, start_new_session=True)  # fmt: skip
    assert proc.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(proc.stdout, selectors.EVENT_READ)
    pending = b""
    with log_path.open("w") as log:
        while True:
            left = limit_s - (time.monotonic() - start)
            if left <= 0:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                message = (f"the test build stopped after {limit_s / 60:.0f} min "
                           f"(--limit-min), waiting for: {waiting_for(lines)}; "
                           f"its log: {log_path}")  # fmt: skip
                print(message, file=sys.stderr, flush=True)
                log.write(message + "\n")
                return 1
            if not selector.select(timeout=min(left, 5.0)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            pending += chunk
            *done, pending_line = pending.split(b"\n")
            pending = pending_line
            for raw in done:
                text = raw.decode(errors="replace")
                lines.append(text)
                log.write(text + "\n")
                print(text, flush=True)
        if pending:
            log.write(pending.decode(errors="replace") + "\n")
    return proc.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", type=Path, default=DEFAULT_OUT,
                        help="the build's folder (default _build/test)")  # fmt: skip
    parser.add_argument("--limit-min", type=float, default=DEFAULT_LIMIT_MIN,
                        help="stop a build that runs longer (minutes)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.limit_min <= 0:
        parser.error(f"--limit-min must be positive, not {args.limit_min}")
    status = build(args.out.resolve(), args.limit_min * 60)
    if status == 0:
        print(f"the test build is in {html_folder(args.out)}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
