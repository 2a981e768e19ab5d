import os
import subprocess
import sys

import pytest
import torch

from d2lcore.device import get_device, make_generator, set_seed


def test_get_device_picks_cuda_only_when_present():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert get_device().type == expected


def test_get_device_honours_env_and_argument(monkeypatch):
    monkeypatch.setenv("D2L_DEVICE", "cpu")
    assert get_device() == torch.device("cpu")
    assert get_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_asking_for_cuda_without_one_says_so():
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        get_device("cuda")


def test_set_seed_makes_runs_repeatable():
    set_seed(123)
    a = (torch.randn(5), torch.rand(1).item())
    set_seed(123)
    b = (torch.randn(5), torch.rand(1).item())
    assert torch.equal(a[0], b[0]) and a[1] == b[1]


def test_make_generator_is_independent_of_global_stream():
    g1, g2 = make_generator(7), make_generator(7)
    torch.rand(100)  # drawing from the global stream changes nothing
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


#: A classic LeNet step's page faults before and after keep_freed_memory, in a fresh
#: interpreter (the allocator's settings are the process's).
_FAULTS = """
import os, resource, sys, torch
from torch import nn
from d2lcore.conv import LeNet
from d2lcore.device import keep_freed_memory
torch.set_num_threads(1)
model, lose = LeNet(), nn.CrossEntropyLoss()
X, y = torch.randn(256, 1, 28, 28), torch.randint(0, 10, (256,))
opt = torch.optim.SGD(model.parameters(), lr=0.1)

def faults(steps=10):
    for _ in range(3):
        opt.zero_grad(); lose(model(X), y).backward(); opt.step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        opt.zero_grad(); lose(model(X), y).backward(); opt.step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps

default = faults()
kept = keep_freed_memory()
print(default, kept, faults(), keep_freed_memory())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
@pytest.mark.parametrize("setting", ["", "system"])
def test_freed_memory_is_kept_for_the_next_step(setting: str) -> None:
    env = {**os.environ, "D2L_MALLOC": setting}
    out = subprocess.run([sys.executable, "-c", _FAULTS], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout.split()  # fmt: skip
    default, kept, after, again = float(out[0]), out[1] == "True", float(out[2]), out[3]
    # By default glibc's own thresholds adapt, and a step faults thousands of times or,
    # in some runs, rarely; kept, a few dozen times at most.
    assert default >= 0
    if setting == "system":
        assert not kept and again == "False"
    else:
        assert kept and again == "True" and after < 200
