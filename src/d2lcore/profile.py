"""Build profiles: how much the pages train.

One switch, the environment variable ``D2L_PROFILE``, decides how long the pages train
and on how much data:

- ``cpu`` (the default): what a 2-core laptop or CI builds in minutes; subsets of
  Fashion-MNIST, few epochs, small grids;
- ``gpu``: what a GPU runner builds in the same time; the full training set, more
  epochs, larger grids.

A page asks the profile for its sizes instead of hard-coding them::

    from d2lcore.profile import choose
    EPOCHS = choose(cpu=5, gpu=15)

and states which profile produced its numbers with :func:`profile_note`. The code path
is the same in both profiles; only the sizes change. The device is chosen separately
(:func:`d2lcore.device.get_device`), so the ``gpu`` profile also runs on a CPU, slowly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch

from d2lcore.device import get_device

#: Environment variable that selects the profile.
PROFILE_ENV = "D2L_PROFILE"

T = TypeVar("T")


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str


PROFILES = {
    "cpu": Profile("cpu", "subsets of the data, few epochs, small grids: minutes on 2 CPU cores"),
    "gpu": Profile("gpu", "the full training sets, more epochs, larger grids: for a GPU"),
}
DEFAULT_PROFILE = "cpu"


def current() -> Profile:
    """The profile named by ``$D2L_PROFILE`` (``cpu`` when unset or empty)."""
    name = os.environ.get(PROFILE_ENV, "").strip().lower() or DEFAULT_PROFILE
    if name not in PROFILES:
        raise ValueError(
            f"{PROFILE_ENV}={os.environ[PROFILE_ENV]!r} is not a profile; set it to one of "
            f"{', '.join(sorted(PROFILES))} (or unset it for {DEFAULT_PROFILE!r})"
        )
    return PROFILES[name]


def choose(*, cpu: T, gpu: T) -> T:
    """The value for the current profile: ``choose(cpu=2_000, gpu=50_000)``."""
    return {"cpu": cpu, "gpu": gpu}[current().name]


def profile_note() -> str:
    """One line for the top of a page: which profile and device produced its numbers."""
    profile = current()
    other = "gpu" if profile.name == "cpu" else "cpu"
    return (
        f"The numbers on this page come from the {profile.name!r} build profile "
        f"({profile.summary}), computed on {get_device().type} with torch "
        f"{torch.__version__.split('+')[0]}. Set {PROFILE_ENV}={other} before building to "
        f"get the {other!r} profile instead."
    )
