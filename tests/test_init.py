import math

import pytest
import torch
from torch import nn

from d2lcore.init import INIT_SCHEMES, fans, init_weights, weight_variance
from d2lcore.models import MLP


@pytest.mark.parametrize("scheme", [s for s in INIT_SCHEMES])
def test_each_scheme_gives_the_variance_it_promises(scheme):
    layer = nn.Linear(1000, 600)
    init_weights(layer, scheme, std=0.05, generator=torch.Generator().manual_seed(0))
    fan_in, fan_out = fans(layer.weight)
    promised = weight_variance(scheme, fan_in, fan_out, std=0.05)
    measured = layer.weight.var().item()
    if promised == 0:
        assert measured == 0
    else:
        # 600k samples: the sample variance is within a few percent of the truth.
        assert measured == pytest.approx(promised, rel=0.03)
    if scheme != "default":
        assert torch.count_nonzero(layer.bias) == 0


def test_variances_are_the_textbook_formulas():
    assert weight_variance("xavier_uniform", 100, 300) == pytest.approx(2 / 400)
    assert weight_variance("kaiming_normal", 100, 300) == pytest.approx(2 / 100)
    assert weight_variance("normal", 100, 300, std=0.1) == pytest.approx(0.01)


def test_conv_fans_count_the_receptive_field():
    conv = nn.Conv2d(3, 16, kernel_size=5)
    assert fans(conv.weight) == (3 * 25, 16 * 25)
    init_weights(conv, "kaiming_normal")
    assert conv.weight.var().item() == pytest.approx(2 / 75, rel=0.1)


def test_applies_to_every_layer_of_a_model_and_is_repeatable():
    a = init_weights(
        MLP(50, (40, 30), 5), "xavier_normal", generator=torch.Generator().manual_seed(1)
    )
    b = init_weights(
        MLP(50, (40, 30), 5), "xavier_normal", generator=torch.Generator().manual_seed(1)
    )
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    layers = [m for m in a.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 3
    for layer in layers:
        fi, fo = fans(layer.weight)
        bound = math.sqrt(3 * weight_variance("xavier_normal", fi, fo))
        assert layer.weight.abs().max() < 3 * bound  # normal, but not wild


def test_unknown_scheme_and_bad_std_are_rejected():
    with pytest.raises(ValueError, match="unknown init scheme"):
        init_weights(nn.Linear(2, 2), "glorot")
    with pytest.raises(ValueError, match="std"):
        init_weights(nn.Linear(2, 2), "normal", std=float("nan"))


def draw_on_two_devices(device: str) -> tuple[nn.Module, nn.Module]:
    models = []
    for on in ("cpu", device):
        model = MLP(20, (16, 8), 3).to(on)
        models.append(init_weights(model, "kaiming_normal",
                                   generator=torch.Generator().manual_seed(0)))  # fmt: skip
    return models[0], models[1]


def test_a_cpu_generator_initializes_a_model_on_another_device():
    """The weights are drawn where the generator lives and copied to the model's device
    (on a GPU, a CPU generator could not draw into a CUDA tensor). The meta device
    stands in for the GPU here: the draw happens, the copy keeps the model's device."""
    on_cpu, on_meta = draw_on_two_devices("meta")
    assert all(p.device.type == "meta" for p in on_meta.parameters())
    assert next(on_cpu.parameters()).std() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_one_seed_gives_one_model_on_cpu_and_gpu():
    on_cpu, on_gpu = draw_on_two_devices("cuda")
    for (name, a), b in zip(on_cpu.named_parameters(), on_gpu.parameters(), strict=True):
        assert b.device.type == "cuda" and torch.equal(a, b.cpu()), name
