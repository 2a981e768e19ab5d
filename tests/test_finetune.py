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
from d2lcore.train import RunResult


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
    with pytest.raises(ValueError, match="choose a positive multiple of 5, e.g. 5"):
        few_labels(Xs, ys, 7)
    with pytest.raises(ValueError, match="choose a positive multiple of 5"):
        few_labels(Xs, ys, 0)
    with pytest.raises(ValueError, match="smallest class has only 20; choose at most 100"):
        few_labels(Xs, ys, 105)


def test_replace_head_is_seeded() -> None:
    a, b = (replace_head(copy.deepcopy(LeNet.modern(5)), 3,
                         generator=torch.Generator().manual_seed(0)) for _ in range(2))  # fmt: skip
    assert torch.equal(get_head(a).weight, get_head(b).weight)


def _tiny_split(n: int, classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=gen), torch.randint(0, classes, (n,), generator=gen)


def test_fine_tune_linear_probe_trains_only_the_head() -> None:
    from d2lcore.finetune import FineTuneConfig, book_cnn, fine_tune

    model = replace_head(book_cnn(4), 3, generator=torch.Generator().manual_seed(0))
    body_before = {k: v.clone() for k, v in model.state_dict().items() if "head" not in k}
    head_before = get_head(model).weight.detach().clone()
    epochs: list[int] = []
    result = fine_tune(model, FineTuneConfig(lr=1e-2, body_lr_mult=0.0, num_epochs=2,
                                             batch_size=8),
                       _tiny_split(16, 3, 0), _tiny_split(8, 3, 1), _tiny_split(8, 3, 2),
                       device="cpu", on_epoch_end=lambda e, h: epochs.append(e))  # fmt: skip
    assert len(epochs) == 2 and len(result.history.train_loss) == 2
    assert result.test_acc is not None and 0.0 <= result.test_acc <= 1.0
    assert not torch.equal(get_head(model).weight.detach(), head_before)
    assert any("running_mean" in name for name in body_before), "no batch norm to test"
    for name, value in model.state_dict().items():  # batch-norm statistics included
        if name in body_before:
            assert torch.equal(value, body_before[name]), f"{name} moved in a linear probe"
    assert model.training, "fit leaves the model in training mode"


def test_frozen_norm_keeps_batch_norm_in_eval_mode_and_lets_go_after() -> None:
    from d2lcore.finetune import frozen_norm

    model = LeNet.modern(5, batch_norm=True).train()
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone(), bn.running_var.clone()
    X = torch.randn(8, 1, 28, 28) * 3 + 1
    with frozen_norm(model):
        model.train()  # what fit does every epoch
        model(X)
        assert not bn.training
        torch.testing.assert_close((bn.running_mean, bn.running_var), stats, rtol=0, atol=0)
    model.train()
    model(X)  # outside the block batch norm updates its statistics again
    assert bn.training and not torch.equal(bn.running_mean, stats[0])


def test_fine_tune_with_augmentation_transforms_every_batch() -> None:
    from d2lcore.finetune import FineTuneConfig, book_cnn, fine_tune

    seen: list[int] = []

    def augment(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return x.flip(-1)

    model = replace_head(book_cnn(4), 3)
    fine_tune(model, FineTuneConfig(num_epochs=1, batch_size=8), _tiny_split(16, 3, 0),
              _tiny_split(8, 3, 1), augment=augment, device="cpu")  # fmt: skip
    assert seen == [1] * 16  # each of the 16 training images, one at a time


def test_pretrain_source_is_cached_and_keyed(tmp_path: Path) -> None:
    from d2lcore.finetune import SourceConfig, pretrain_source

    train, val = _tiny_split(16, 2, 0), _tiny_split(8, 2, 1)
    config = SourceConfig(classes=(0, 1), num_epochs=1, batch_size=8)
    first = pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu")
    assert isinstance(first, RunResult) and first.model is not None
    meta = first.extras
    assert meta["cached"] is False and Path(meta["path"]).is_file()
    again = pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu")
    assert again.extras["cached"] is True and again.extras["path"] == meta["path"]
    assert again.model is not None
    for a, b in zip(first.model.state_dict().values(), again.model.state_dict().values(),
                    strict=True):  # fmt: skip
        assert torch.equal(a, b)
    # the history and final numbers come back with the checkpoint
    assert again.history == first.history and again.history.num_epochs == 1
    assert again.metrics == first.metrics and first.metrics["val_acc"] == first.history.val_acc[-1]
    # other data or another configuration is another checkpoint
    meta3 = pretrain_source(config, _tiny_split(16, 2, 5), val, cache_dir=tmp_path,
                            device="cpu").extras  # fmt: skip
    meta4 = pretrain_source(SourceConfig(classes=(0, 1), num_epochs=1, batch_size=8, lr=1e-3),
                            train, val, cache_dir=tmp_path, device="cpu").extras  # fmt: skip
    assert len({meta["path"], meta3["path"], meta4["path"]}) == 3
    # a damaged checkpoint is trained again, not trusted
    Path(meta["path"]).write_bytes(b"not a checkpoint")
    meta5 = pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu").extras
    assert meta5["cached"] is False
    assert pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu").extras["cached"]


def test_step_loader_counts_steps_across_passes() -> None:
    from d2lcore.data import TensorLoader
    from d2lcore.finetune import StepLoader

    X = torch.arange(10.0).reshape(-1, 1)
    loader = TensorLoader(X, X.flatten().long(), batch_size=4, seed=0, device="cpu")
    steps = StepLoader(loader, 4)
    first, second = [b[1].tolist() for b in steps], [b[1].tolist() for b in steps]
    assert len(steps) == 4 and len(first) == len(second) == 4
    # passes of 4, 4, 2 examples: every example once per round, rounds continue across epochs
    seen = [v for batch in first + second for v in batch]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:20]) == list(range(10))
    assert [len(b) for b in first + second] == [4, 4, 2, 4, 4, 2, 4, 4]
    with pytest.raises(ValueError, match="at least 1"):
        StepLoader(loader, 0)


def test_fine_tune_steps_per_epoch_sets_the_budget() -> None:
    from d2lcore.finetune import FineTuneConfig, book_cnn, fine_tune

    model = replace_head(book_cnn(4), 3)
    result = fine_tune(model, FineTuneConfig(num_epochs=3, batch_size=4, steps_per_epoch=5),
                       _tiny_split(8, 3, 0), _tiny_split(8, 3, 1), device="cpu")  # fmt: skip
    assert len(result.history.val_acc) == 3 and result.config["steps_per_epoch"] == 5


def test_finetune_trainers_leave_the_global_random_state_alone(tmp_path: Path) -> None:
    from d2lcore.finetune import (
        FineTuneConfig,
        SourceConfig,
        book_cnn,
        fine_tune,
        pretrain_source,
    )

    def augment(x: torch.Tensor) -> torch.Tensor:  # draws from the global generator
        return x + 0.01 * torch.randn_like(x)

    train, val = _tiny_split(16, 2, 0), _tiny_split(8, 2, 1)
    config = SourceConfig(classes=(0, 1), num_epochs=1, batch_size=8)
    torch.manual_seed(7)
    before = torch.random.get_rng_state()
    source = pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu")
    pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu")  # from the cache
    runs = []
    for _ in range(2):
        model = replace_head(book_cnn(2, seed=0), 3, generator=torch.Generator().manual_seed(0))
        runs.append(fine_tune(model, FineTuneConfig(num_epochs=1, batch_size=8),
                              _tiny_split(16, 3, 0), _tiny_split(8, 3, 1), augment=augment,
                              device="cpu"))  # fmt: skip
    assert torch.equal(torch.random.get_rng_state(), before)
    assert isinstance(source, RunResult) and all(isinstance(r, RunResult) for r in runs)
    assert runs[0].history.train_loss == runs[1].history.train_loss  # augmentation seeded
    assert runs[0].model is not None


def _damage_checkpoint(path: Path, how: str) -> None:
    entry = torch.load(path, weights_only=True)
    if how == "nan_weight":
        first = next(iter(entry["state_dict"]))
        entry["state_dict"][first][..., 0] = float("nan")
    elif how == "meta_not_a_dict":
        entry["meta"] = [1, 2, 3]
    elif how == "meta_val_acc":
        entry["meta"]["val_acc"] = "high"
    elif how == "meta_history":
        entry["meta"]["history"]["train_loss"] = [float("inf")]
    elif how == "meta_key":
        entry["meta"]["key"] = "another"
    torch.save(entry, path)


@pytest.mark.parametrize(
    "how", ["nan_weight", "meta_not_a_dict", "meta_val_acc", "meta_history", "meta_key"]
)
def test_damaged_source_checkpoint_is_retrained(tmp_path: Path, how: str) -> None:
    """Non-finite weights or malformed metadata in a cached checkpoint: trained again
    and overwritten, never loaded (and no ValueError escapes)."""
    from d2lcore.finetune import SourceConfig, pretrain_source

    train, val = _tiny_split(16, 2, 0), _tiny_split(8, 2, 1)
    config = SourceConfig(classes=(0, 1), num_epochs=1, batch_size=8)
    first = pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu")
    _damage_checkpoint(Path(first.extras["path"]), how)
    again = pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu")
    assert again.extras["cached"] is False
    assert all(torch.isfinite(p).all() for p in again.model.parameters())
    assert pretrain_source(config, train, val, cache_dir=tmp_path, device="cpu").extras["cached"]


def test_non_finite_weights_are_refused(tmp_path: Path) -> None:
    from d2lcore.finetune import book_cnn

    model = book_cnn(2)
    state = model.state_dict()
    next(iter(state.values()))[0] = float("inf")
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match=r"w\.pt: holds NaN or infinite values"):
        load_pretrained(tmp_path / "w.pt", book_cnn(2))


def test_unsafe_checkpoint_message_is_plain_and_says_what_to_do(tmp_path: Path) -> None:
    """A pickled object in a checkpoint is refused with a message that says why and what
    to do, without torch's terminal colour codes, and its code never runs."""
    ran: list[int] = []

    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (ran.append, (1,))

    torch.save({"state_dict": {}, "meta": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError) as err:
        load_pretrained(tmp_path / "evil.pt", nn.Linear(2, 2))
    text = str(err.value)
    assert "\x1b[" not in text and "refused" in text and "state_dict" in text
    assert "It names getattr, which weights-only loading does not allow" in text
    assert ran == []


def test_restore_best_keeps_the_epoch_with_the_best_validation_accuracy() -> None:
    from d2lcore.finetune import FineTuneConfig, book_cnn, fine_tune
    from d2lcore.metrics import evaluate

    train, val = _tiny_split(24, 3, 0), _tiny_split(24, 3, 1)
    config = FineTuneConfig(lr=3e-2, body_lr_mult=1.0, num_epochs=6, batch_size=4,
                            steps_per_epoch=3)  # fmt: skip
    def model() -> nn.Module:
        return replace_head(book_cnn(4, seed=0), 3, generator=torch.Generator().manual_seed(0))

    result = fine_tune(model(), config, train, val, val, device="cpu", restore_best=True)
    accs = result.history.val_acc
    best = max(range(len(accs)), key=lambda i: (accs[i], -i))  # the earliest of equals
    assert result.metrics == {"best_epoch": best + 1, "best_val_acc": accs[best]}
    # the model handed back is the one of that epoch: its validation accuracy is the best
    loader = [(val[0], val[1])]
    assert evaluate(result.model, loader, nn.CrossEntropyLoss()).accuracy == accs[best]
    assert result.test_acc == accs[best]  # the "test" split here is the validation one
    # without it, the last epoch's weights and no extra metrics
    plain = fine_tune(model(), config, train, val, val, device="cpu")
    assert plain.metrics == {} and plain.history.val_acc == accs
