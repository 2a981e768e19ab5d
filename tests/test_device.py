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
