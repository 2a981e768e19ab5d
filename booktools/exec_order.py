"""The order pages execute in and the cores each gets: shared by the book build
(``parallel_exec.py``, a Sphinx extension), the Binder rehearsal and the GPU check
(``booktools/gpu_check.py``, which runs where Sphinx is not installed). No Sphinx here.

The longest pages start first, by the seconds each took when last measured
(``exec_times.json`` beside this file; update them from ``booktools/exec_report.py`` when a
page's time changes much), so that the short ones fill in at the end. A page missing
from the file starts before all of them: it may be the longest.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path

TIMES_FILE = Path(__file__).with_name("exec_times.json")


def expected_seconds() -> dict[str, float]:
    """How long each page takes to execute, as last measured: the order of execution
    only, so a missing or unreadable file is no error."""
    try:
        data = json.loads(TIMES_FILE.read_text())
        return {str(page): float(s) for page, s in data["seconds"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def longest_first(pages: Iterable[str]) -> list[str]:
    """``pages`` (names such as ``chapters/attention``) in the order to start them."""
    expected = expected_seconds()
    return sorted(pages, key=lambda page: expected.get(page, math.inf), reverse=True)


def threads_per_job(jobs: int) -> int:
    """The cores each of ``jobs`` kernels gets (``OMP_NUM_THREADS``)."""
    return max(1, (os.cpu_count() or 1) // jobs)
