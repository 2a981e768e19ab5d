"""The build profile switch (D2L_PROFILE)."""

from __future__ import annotations

import pytest

from d2lcore import profile


def test_default_is_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(profile.PROFILE_ENV, raising=False)
    assert profile.current().name == "cpu"
    assert profile.choose(cpu=2_000, gpu=50_000) == 2_000
    monkeypatch.setenv(profile.PROFILE_ENV, "")
    assert profile.current().name == "cpu"


def test_gpu_profile_picks_the_gpu_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(profile.PROFILE_ENV, " GPU ")
    assert profile.current().name == "gpu"
    assert profile.choose(cpu=[0.0, 0.5], gpu=[0.0, 0.2, 0.5]) == [0.0, 0.2, 0.5]
    note = profile.profile_note()
    assert "'gpu' build profile" in note and "D2L_PROFILE=cpu" in note


def test_unknown_profile_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(profile.PROFILE_ENV, "tpu")
    with pytest.raises(ValueError, match=r"D2L_PROFILE='tpu' is not a profile; set it to one of"):
        profile.current()


def test_note_names_profile_device_and_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.delenv(profile.PROFILE_ENV, raising=False)
    note = profile.profile_note()
    assert "'cpu' build profile" in note
    assert f"on {profile.get_device().type} with torch {torch.__version__.split('+')[0]}" in note
    assert "D2L_PROFILE=gpu" in note
