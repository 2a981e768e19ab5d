"""Attention: masked softmax edge cases, shapes, and equality with torch and d2l."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from d2lcore.attention import (
    AdditiveAttention,
    DotProductAttention,
    MultiHeadAttention,
    NWKernelRegression,
    anti_diagonal_mass,
    causal_mask,
    fit_bandwidth,
    kernel_regression_data,
    masked_softmax,
    nadaraya_watson,
    sinusoidal_encoding,
)
from d2lcore.train import RunResult
from d2lcore.transformer import (
    EncoderBlock,
    Seq2SeqTransformer,
    TransformerConfig,
    TransformerEncoder,
    greedy_decode,
    order_blind_reversal_accuracy,
    reversal_data,
    shift_right,
    sorting_data,
    token_accuracy,
    train_reversal,
    train_seq2seq,
)

d2l = pytest.importorskip("d2l.torch")

# Tiny models: more threads only add overhead (and spin on a busy machine).
pytestmark = pytest.mark.usefixtures("one_thread")


def test_masked_softmax_zero_length_and_all_masked_rows_are_zero_not_nan():
    scores = torch.randn(3, 2, 5, requires_grad=True)
    w = masked_softmax(scores, torch.tensor([0, 2, 5]))
    assert not torch.isnan(w).any()
    assert torch.equal(w[0], torch.zeros(2, 5))
    torch.testing.assert_close(w[1:].sum(-1), torch.ones(2, 2))
    assert torch.equal(w[1, :, 2:], torch.zeros(2, 3))
    w.sum().backward()
    assert scores.grad is not None and torch.isfinite(scores.grad).all()
    # 2-D valid lengths: one per query.
    w2 = masked_softmax(scores.detach(), torch.tensor([[0, 1], [3, 0], [5, 5]]))
    assert torch.equal(w2[0, 0], torch.zeros(5)) and torch.equal(w2[1, 1], torch.zeros(5))
    assert float(w2[0, 1, 0]) == 1.0


def test_masked_softmax_matches_d2l_where_lengths_positive():
    scores = torch.randn(4, 3, 6)
    for lens in (torch.tensor([1, 3, 6, 2]), torch.randint(1, 7, (4, 3))):
        torch.testing.assert_close(masked_softmax(scores, lens),
                                   d2l.masked_softmax(scores.clone(), lens))
    torch.testing.assert_close(masked_softmax(scores), torch.softmax(scores, -1))


def test_additive_attention_matches_d2l():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 3, 5), torch.randn(2, 7, 4), torch.randn(2, 7, 6)
    lens = torch.tensor([2, 7])
    ref = d2l.AdditiveAttention(8, dropout=0.0)
    ref(q, k, v, lens)  # materialize the lazy layers
    ours = AdditiveAttention(5, 4, 8)
    ours.load_state_dict(ref.state_dict())
    out = ours(q, k, v, lens)
    assert out.shape == (2, 3, 6) and ours.attention_weights is not None
    torch.testing.assert_close(out, ref(q, k, v, lens))
    torch.testing.assert_close(ours.attention_weights, ref.attention_weights)


def test_dot_product_attention_matches_d2l_and_torch_sdpa():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 4, 8), torch.randn(3, 6, 8), torch.randn(3, 6, 5)
    lens = torch.tensor([1, 4, 6])
    out = DotProductAttention()(q, k, v, lens)
    assert out.shape == (3, 4, 5)
    torch.testing.assert_close(out, d2l.DotProductAttention(0.0)(q, k, v, lens))
    mask = torch.arange(6)[None, None, :] < lens[:, None, None]  # (B, 1, K), True = visible
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_multi_head_attention_matches_torch():
    torch.manual_seed(0)
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    ours = MultiHeadAttention(16, 4).load_torch_weights(ref)
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    out = ours(q, kv, kv)
    ref_out, ref_w = ref(q, kv, kv, average_attn_weights=False)
    assert out.shape == (2, 5, 16)
    torch.testing.assert_close(out, ref_out)
    assert ours.attention_weights is not None
    torch.testing.assert_close(ours.attention_weights, ref_w)
    # Valid lengths are key padding: key j is hidden when j >= valid_len.
    lens = torch.tensor([3, 7])
    padding = torch.arange(7)[None, :] >= lens[:, None]
    torch.testing.assert_close(ours(q, kv, kv, lens), ref(q, kv, kv, key_padding_mask=padding)[0])


def test_causal_attention_matches_torch_sdpa_is_causal():
    torch.manual_seed(0)
    M = causal_mask(3, 5)
    assert M.shape == (3, 5) and M[0, 0] == 0 and M[0, 1] == float("-inf") and M[2, 2] == 0
    for Q, K in ((6, 6), (4, 7)):
        q, k, v = torch.randn(2, Q, 8), torch.randn(2, K, 8), torch.randn(2, K, 3)
        attention = DotProductAttention()
        out = attention(q, k, v, causal=True)
        torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
        assert attention.attention_weights is not None
        assert torch.equal(attention.attention_weights.triu(1), torch.zeros(2, Q, K))
    # Multi-head, against torch's with its own causal mask.
    ref = nn.MultiheadAttention(16, 4, batch_first=True)
    ours = MultiHeadAttention(16, 4).load_torch_weights(ref)
    X = torch.randn(2, 5, 16)
    expected = ref(X, X, X, attn_mask=nn.Transformer.generate_square_subsequent_mask(5))[0]
    torch.testing.assert_close(ours(X, X, X, causal=True), expected)
    # Causal and padding together: a row with no visible key is still zero, never NaN.
    out = DotProductAttention()(q, k, v, torch.tensor([0, 3]), causal=True)
    assert torch.isfinite(out).all() and torch.equal(out[0], torch.zeros(Q, 3))


def test_pre_norm_encoder_block_matches_torch():
    torch.manual_seed(0)
    for norm_first in (False, True):
        config = TransformerConfig(d_model=16, num_heads=4, ffn_hiddens=32,
                                   norm_first=norm_first)
        ref = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True,
                                         norm_first=norm_first).eval()
        ours = EncoderBlock(config).eval()
        ours.attention.load_torch_weights(ref.self_attn)
        with torch.no_grad():
            for mine, theirs in ((ours.ffn[0], ref.linear1), (ours.ffn[2], ref.linear2),
                                 (ours.norm1, ref.norm1), (ours.norm2, ref.norm2)):
                mine.load_state_dict(theirs.state_dict())
        X = torch.randn(2, 5, 16)
        torch.testing.assert_close(ours(X), ref(X))


def test_decoder_is_causal_and_greedy_decoding_reads_its_own_output():
    torch.manual_seed(0)
    config = TransformerConfig(vocab_size=5, seq_len=6, d_model=16, num_heads=2, num_layers=2,
                               ffn_hiddens=16)
    model = Seq2SeqTransformer(config).eval()
    src, tgt = sorting_data(4, 6, 5, seed=0)
    assert torch.equal(tgt, src.sort(dim=1).values)
    tgt_in = shift_right(tgt, model.bos)
    assert torch.equal(tgt_in[:, 0], torch.full((4,), 5))
    assert torch.equal(tgt_in[:, 1:], tgt[:, :-1])
    logits = model(src, tgt_in)
    assert logits.shape == (4, 5, 6)
    changed = tgt_in.clone()
    changed[:, 3:] = (changed[:, 3:] + 1) % 5  # the future of position 2 changes
    torch.testing.assert_close(model(src, changed)[:, :, :3], logits[:, :, :3])
    assert [m.shape for m in model.cross_attention_maps()] == [(4, 2, 6, 6)] * 2
    # Greedy decoding: each token is the argmax given the tokens decoded before it.
    out = greedy_decode(model, src, 6)
    assert out.shape == (4, 6) and not model.training
    torch.testing.assert_close(model(src, shift_right(out, model.bos)).argmax(dim=1), out)


def test_seq2seq_learns_sorting_and_warm_up_ramps_the_learning_rate():
    train, val = sorting_data(2000, 5, 6, seed=0), sorting_data(300, 5, 6, seed=1)
    config = TransformerConfig(vocab_size=6, seq_len=5, d_model=16, num_heads=2, num_layers=1,
                               ffn_hiddens=32)
    epochs_seen = []

    def record(epoch, history):
        epochs_seen.append(epoch)

    run = train_seq2seq(config, train, val, test=val, lr=3e-3, num_epochs=4, warmup_steps=50,
                        device="cpu", on_epoch_end=record)  # fmt: skip
    assert isinstance(run.model, Seq2SeqTransformer) and epochs_seen == [1, 2, 3, 4]
    assert run.test_acc is not None and run.test_acc > 0.9, run.test_acc
    assert run.config["warmup_steps"] == 50


def test_fit_steps_the_scheduler_after_every_optimizer_step():
    from d2lcore.train import fit

    model = nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 4))
    batches = [(torch.randn(3, 2), torch.randn(3, 1))] * 3
    fit(model, batches, loss_fn=nn.MSELoss(), optimizer=optimizer, num_epochs=1,
        device=torch.device("cpu"), scheduler=scheduler)  # fmt: skip
    assert optimizer.param_groups[0]["lr"] == 1.0  # after 3 steps: factor min(1, 4 / 4)
    assert scheduler.last_epoch == 3


def test_sinusoidal_encoding_values():
    P = sinusoidal_encoding(50, 16)
    assert P.shape == (50, 16)
    torch.testing.assert_close(P[0, 0::2], torch.zeros(8))
    torch.testing.assert_close(P[0, 1::2], torch.ones(8))
    i, j = 7, 3
    torch.testing.assert_close(P[i, 2 * j], torch.sin(torch.tensor(i / 10000 ** (2 * j / 16))))
    ref = d2l.PositionalEncoding(16, 0.0, max_len=50)
    torch.testing.assert_close(P, ref.P[0])


def test_nadaraya_watson_limits_and_learned_bandwidth():
    x, y = kernel_regression_data(40, seed=0)
    pred, w = nadaraya_watson(x, x, y, bandwidth=100.0)
    torch.testing.assert_close(pred, y.mean().expand(40), atol=1e-3, rtol=0)  # average pooling
    torch.testing.assert_close(w.sum(1), torch.ones(40))
    run = fit_bandwidth(x, y, bandwidth=2.0, num_steps=60)
    model, losses = run.model, run.history.train_loss
    assert isinstance(run, RunResult) and isinstance(model, NWKernelRegression)
    assert len(losses) == 60 and not run.diverged
    assert losses[-1] < losses[0] and 0.01 < model.bandwidth < 2.0
    assert run.metrics["bandwidth"] == model.bandwidth


def test_anti_diagonal_mass():
    T = 5
    assert float(anti_diagonal_mass(torch.eye(T).flip(-1))) == 1.0
    assert float(anti_diagonal_mass(torch.full((T, T), 1 / T))) == pytest.approx(1 / T)


def test_transformer_learns_reversal_quickly():
    train, val = reversal_data(2000, 4, 6, seed=0), reversal_data(300, 4, 6, seed=1)
    config = TransformerConfig(vocab_size=6, seq_len=4, d_model=16, num_heads=1, num_layers=2,
                               ffn_hiddens=32)
    run = train_reversal(config, train, val, test=val, lr=3e-3, num_epochs=8,
                         device=torch.device("cpu"))  # fmt: skip
    model, history = run.model, run.history
    assert isinstance(run, RunResult) and isinstance(model, TransformerEncoder)
    assert run.test_acc == history.val_acc[-1] and run.config["lr"] == 3e-3
    assert model(val[0]).shape == (300, 6, 4)
    assert len(history.val_acc) == len(history.val_loss) == 8
    assert history.val_acc[-1] == token_accuracy(model, *val) > 0.9
    assert history.val_loss[-1] < history.val_loss[0]
    maps = model.attention_maps()
    assert [m.shape for m in maps] == [(300, 1, 4, 4)] * 2


def test_without_positions_the_encoder_is_blind_to_order():
    torch.manual_seed(0)
    X = torch.randint(6, (5, 4))
    perm = torch.tensor([2, 0, 3, 1])
    for positional in (False, True):
        config = TransformerConfig(vocab_size=6, seq_len=4, d_model=8, num_heads=2,
                                   num_layers=2, ffn_hiddens=8, positional=positional)
        model = TransformerEncoder(config).eval()
        with torch.no_grad():
            permuted_out, out_of_permuted = model(X)[:, :, perm], model(X[:, perm])
        # Without positions, permuting the input only permutes the output.
        assert torch.allclose(permuted_out, out_of_permuted, atol=1e-5) == (not positional)


def test_order_blind_reversal_accuracy_is_the_best_order_blind_predictor():
    # Every sequence of length T over V tokens, equally likely: the best predictor that
    # sees only (token at i, multiset of tokens) picks, per such pair, the target most
    # often seen with it. Its accuracy, counted by brute force, is the ceiling.
    import itertools
    from collections import Counter

    for T, V in ((4, 3), (5, 3), (3, 4)):
        X = torch.tensor(list(itertools.product(range(V), repeat=T)))
        seen: dict[tuple, Counter] = {}
        for x in X.tolist():
            for i in range(T):
                key = (x[i], tuple(sorted(x)))
                seen.setdefault(key, Counter())[x[T - 1 - i]] += 1
        best = sum(max(c.values()) for c in seen.values()) / (len(X) * T)
        assert order_blind_reversal_accuracy(X) == pytest.approx(best, abs=1e-6)


def test_trainers_leave_the_global_random_state_alone():
    x, y = kernel_regression_data(20, seed=0)
    train, val = reversal_data(64, 4, 6, seed=0), reversal_data(16, 4, 6, seed=1)
    config = TransformerConfig(vocab_size=6, seq_len=4, d_model=8, num_heads=1, num_layers=1,
                               ffn_hiddens=8, dropout=0.2)  # fmt: skip
    torch.manual_seed(99)
    before = torch.random.get_rng_state()
    fit_bandwidth(x, y, num_steps=3)
    first = train_reversal(config, train, val, num_epochs=2, device="cpu")
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(5)  # whatever the caller drew before, the run is the same
    second = train_reversal(config, train, val, num_epochs=2, device="cpu")
    assert first.history.train_loss == second.history.train_loss


def test_train_reversal_marks_a_diverged_run():
    train, val = reversal_data(64, 4, 6, seed=0), reversal_data(16, 4, 6, seed=1)
    config = TransformerConfig(vocab_size=6, seq_len=4, d_model=8, num_heads=1, num_layers=1,
                               ffn_hiddens=8)  # fmt: skip
    run = train_reversal(config, train, val, test=val, lr=float("inf"), num_epochs=2,
                         device="cpu")  # fmt: skip
    assert run.diverged and run.history.diverged_epoch == 1 and run.test_acc is None


def test_a_page_like_grid_with_extras_is_served_from_the_cache(tmp_path):
    import numpy as np

    from d2lcore.cache import tensor_digest
    from d2lcore.grid import run_grid

    train, val = reversal_data(64, 4, 6, seed=0), reversal_data(16, 4, 6, seed=1)
    calls = []

    def one(config):  # as the attention page's grid: a run, and its attention map
        calls.append(dict(config))
        cfg = TransformerConfig(vocab_size=6, seq_len=4, d_model=8, num_heads=1,
                                num_layers=1, ffn_hiddens=8, dropout=config["dropout"])  # fmt: skip
        run = train_reversal(cfg, train, val, test=val, lr=config["lr"], num_epochs=2,
                             device="cpu")  # fmt: skip
        run.model.eval()
        with torch.no_grad():
            run.model(val[0])
        run.extras["attention_map"] = run.model.attention_maps()[-1][:, 0].mean(dim=0)
        return run

    axes = {"lr": [1e-3, 3e-3], "dropout": [0.0, 0.1]}
    depends_on = {"data": tensor_digest(*train, *val)}
    first = run_grid(axes, one, depends_on=depends_on, cache=tmp_path, device="cpu", name="att")
    assert len(calls) == 4 and first.meta["from_cache"] is False
    again = run_grid(axes, one, depends_on=depends_on, cache=tmp_path, device="cpu", name="att")
    assert len(calls) == 4 and again.meta["from_cache"] is True  # nothing trained
    for a, b in zip(first, again, strict=True):
        assert a.history == b.history and a.test_acc == b.test_acc
        assert isinstance(b.extras["attention_map"], np.ndarray)
        assert b.extras["attention_map"].shape == (4, 4)
        np.testing.assert_array_equal(a.extras["attention_map"], b.extras["attention_map"])
    assert again.get(lr=3e-3, dropout=0.1).test_acc == first.runs[3].test_acc
    changed = run_grid(axes, one, depends_on={"data": "other"}, cache=tmp_path, device="cpu",
                       name="att")  # fmt: skip
    assert len(calls) == 8 and changed.meta["from_cache"] is False
