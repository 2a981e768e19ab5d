"""Tests of d2lcore.finetune: heads, freezing, parameter groups, checkpoints."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from d2lcore.conv import LeNet, SmallResNet
from d2lcore.finetune import (
    CheckpointError,
    class_subset,
    few_labels,
    freeze_body,
    get_head,
    head_name,
    load_pretrained,
    param_groups,
    replace_head,
    save_checkpoint,
)


def get_first_conv_channels(model: nn.Module) -> int:
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    return conv.in_channels


def _step(model: nn.Module, opt: torch.optim.Optimizer, X: torch.Tensor) -> None:
    opt.zero_grad()
    nn.functional.cross_entropy(model(X), torch.zeros(len(X), dtype=torch.long)).backward()
    opt.step()


def test_head_names() -> None:
    assert head_name(LeNet.modern(5)) == "net.15"
    assert head_name(SmallResNet((4, 8))) == "head.2"
    assert head_name(resnet18(num_classes=7)) == "fc"


@pytest.mark.parametrize("make", [lambda: LeNet.modern(5), lambda: resnet18(num_classes=7)])
def test_replace_head_keeps_body(make) -> None:
    model = make()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    old_in = get_head(model).in_features
    replace_head(model, 3, init="zero")
    head = get_head(model)
    assert (head.in_features, head.out_features) == (old_in, 3)
    assert torch.count_nonzero(head.weight) == 0
    after = model.state_dict()
    name = head_name(model)
    for k, v in before.items():
        if not k.startswith(name + "."):
            assert torch.equal(after[k], v), k
    channels = get_first_conv_channels(model)
    X = torch.rand(2, channels, 28, 28)
    assert model(X).shape == (2, 3)


def test_freeze_body_leaves_body_unchanged() -> None:
    model = freeze_body(LeNet.modern(5, batch_norm=False))
    head = get_head(model)
    body = [p for p in model.parameters() if p is not head.weight and p is not head.bias]
    assert all(not p.requires_grad for p in body) and head.weight.requires_grad
    before = [p.clone() for p in body]
    head_before = head.weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    _step(model, opt, torch.rand(4, 1, 28, 28))
    assert all(torch.equal(a, b) for a, b in zip(before, body, strict=True))
    assert not torch.equal(head_before, head.weight)


def test_param_groups_rates_and_steps() -> None:
    torch.manual_seed(0)
    model = LeNet.modern(5, batch_norm=False)
    groups = param_groups(model, lr=0.1, body_lr_mult=0.01)
    assert [g["lr"] for g in groups] == pytest.approx([0.1, 0.001])
    n_head, n_body = (sum(p.numel() for p in g["params"]) for g in groups)
    assert n_head + n_body == sum(p.numel() for p in model.parameters())
    opt = torch.optim.SGD(groups)
    before = [[p.clone() for p in g["params"]] for g in groups]
    _step(model, opt, torch.rand(8, 1, 28, 28))
    # Plain SGD moves every parameter by lr * grad: check it per group.
    for g, old in zip(groups, before, strict=True):
        for p, p0 in zip(g["params"], old, strict=True):
            torch.testing.assert_close(p0 - p, g["lr"] * p.grad)
    assert len(param_groups(model, lr=0.1, body_lr_mult=0.0)) == 1


@pytest.mark.parametrize("make", [lambda: SmallResNet((4, 8)), lambda: resnet18(num_classes=7)])
def test_checkpoint_round_trip(tmp_path: Path, make) -> None:
    torch.manual_seed(0)
    model = make()
    path = save_checkpoint(tmp_path / "m.pt", model, {"val_acc": 0.5})
    torch.manual_seed(1)
    other = make()
    assert load_pretrained(path, other) == {"val_acc": 0.5}
    for (k, v), w in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(v, w), k
    assert not list(tmp_path.glob(".*.tmp"))  # the atomic write left no temporary file


def test_plain_torchvision_state_dict_with_new_head(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = resnet18()  # 1000 classes, as torchvision's ImageNet weights
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    target = replace_head(resnet18(), 4)
    assert load_pretrained(path, target, skip_head=True) == {}
    assert torch.equal(target.conv1.weight, source.conv1.weight)
    assert get_head(target).out_features == 4


def test_corrupt_checkpoints_are_rejected(tmp_path: Path) -> None:
    model = SmallResNet((4, 8))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt.*delete it"):
        load_pretrained(garbage, model)
    good = save_checkpoint(tmp_path / "good.pt", model)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated.pt.*corrupt or incomplete"):
        load_pretrained(truncated, model)
    with pytest.raises(CheckpointError, match="missing.pt: no such"):
        load_pretrained(tmp_path / "missing.pt", model)


def test_mismatched_checkpoints_are_rejected(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "small.pt", SmallResNet((4, 8)))
    with pytest.raises(CheckpointError, match=r"(?s)small.pt: does not fit SmallResNet.*same arch"):
        load_pretrained(path, SmallResNet((4, 16)))  # same layers, other shapes
    with pytest.raises(CheckpointError, match="small.pt: does not fit LeNet"):
        load_pretrained(path, LeNet.modern(10))  # other layers


def test_class_subset_and_few_labels() -> None:
    y = torch.arange(10).repeat(20)
    X = y.float().reshape(-1, 1)
    Xs, ys = class_subset(X, y, (5, 6, 7, 8, 9))
    assert torch.equal(Xs.flatten().long() - 5, ys) and set(ys.tolist()) == set(range(5))
    Xf, yf = few_labels(Xs, ys, 10, seed=0)
    assert torch.bincount(yf).tolist() == [2] * 5
    assert torch.equal(Xf.flatten().long() - 5, yf)
    with pytest.raises(ValueError):
        few_labels(Xs, ys, 7)


def test_replace_head_is_seeded() -> None:
    a, b = (replace_head(copy.deepcopy(LeNet.modern(5)), 3,
                         generator=torch.Generator().manual_seed(0)) for _ in range(2))  # fmt: skip
    assert torch.equal(get_head(a).weight, get_head(b).weight)
