"""Attention: kernel regression as attention pooling, masked softmax, additive and
scaled dot-product attention (with an optional causal mask), measures of attention
weights, multi-head attention and sinusoidal positional encoding. The Transformer built
from them is :mod:`d2lcore.transformer`'s.

Shapes follow PyTorch's batch-first convention: queries ``(B, Q, d)``, keys
``(B, K, d)``, values ``(B, K, v)``; attention weights ``(B, Q, K)`` (one row of
weights per query, summing to one over the keys it may see).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from d2lcore.device import make_generator
from d2lcore.train import EpochHook, RunResult, fit

# ----------------------------------------------------------------------------------
# Nadaraya-Watson kernel regression


def kernel_regression_data(
    num_train: int = 50, *, noise: float = 0.5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noisy samples of ``f(x) = 2 sin(x) + x**0.8`` at sorted ``x`` in ``[0, 5)``.

    Returns ``x`` and ``y``, both of shape ``(num_train,)``.
    """
    gen = make_generator(seed)
    x = torch.sort(torch.rand(num_train, generator=gen) * 5).values
    y = kernel_regression_target(x) + noise * torch.randn(num_train, generator=gen)
    return x, y


def kernel_regression_target(x: torch.Tensor) -> torch.Tensor:
    """The noise-free function behind :func:`kernel_regression_data`."""
    return 2 * torch.sin(x) + x**0.8


def gaussian_attention_weights(
    queries: torch.Tensor, keys: torch.Tensor, bandwidth: float | torch.Tensor
) -> torch.Tensor:
    """Nadaraya-Watson weights ``softmax_j(-(q - k_j)**2 / (2 h**2))``, shape ``(Q, K)``.

    ``queries`` is ``(Q,)``, ``keys`` is ``(K,)``; a small bandwidth ``h`` looks only
    at the nearest keys, a large one averages everything.
    """
    diffs = queries[:, None] - keys[None, :]  # (Q, K)
    return torch.softmax(-(diffs**2) / (2 * bandwidth**2), dim=1)


def nadaraya_watson(
    queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, bandwidth: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention pooling with a Gaussian kernel: the predictions ``(Q,)`` and weights ``(Q, K)``."""
    weights = gaussian_attention_weights(queries, keys, bandwidth)
    return weights @ values, weights


class NWKernelRegression(nn.Module):
    """Nadaraya-Watson regression whose bandwidth is a learned parameter.

    The bandwidth is stored as its logarithm so that it stays positive during training.
    ``forward(queries, keys, values)`` returns predictions ``(Q,)``; the last weights
    are kept in ``attention_weights``.
    """

    def __init__(self, bandwidth: float = 1.0) -> None:
        super().__init__()
        self.log_bandwidth = nn.Parameter(torch.tensor(math.log(bandwidth)))
        self.attention_weights: torch.Tensor | None = None

    @property
    def bandwidth(self) -> float:
        return float(self.log_bandwidth.detach().exp())

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        weights = gaussian_attention_weights(queries, keys, self.log_bandwidth.exp())
        self.attention_weights = weights.detach()
        return weights @ values


def leave_one_out_keys(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each training point, the *other* points as keys and values: ``(n, n-1)`` each.

    Training a bandwidth with each point among its own keys would drive it to zero
    (every point predicts itself perfectly), so each query leaves itself out.
    """
    n = len(x)
    keep = ~torch.eye(n, dtype=torch.bool, device=x.device)
    return x.expand(n, n)[keep].reshape(n, n - 1), y.expand(n, n)[keep].reshape(n, n - 1)


class _LeaveOneOut(nn.Module):
    """``model``'s predictions for the training inputs, each from the *other* points
    (:func:`leave_one_out_keys`): what :func:`fit_bandwidth` trains."""

    keys: torch.Tensor
    values: torch.Tensor

    def __init__(self, model: NWKernelRegression, x: torch.Tensor, y: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        keys, values = leave_one_out_keys(x, y)  # (n, n-1)
        self.register_buffer("keys", keys, persistent=False)
        self.register_buffer("values", values, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.model.log_bandwidth.exp()
        weights = torch.softmax(-((x[:, None] - self.keys) ** 2) / (2 * h**2), dim=1)  # (n, n-1)
        return (weights * self.values).sum(dim=1)  # (n,)


def fit_bandwidth(
    x: torch.Tensor, y: torch.Tensor, *, bandwidth: float = 1.0, lr: float = 0.1,
    num_steps: int = 200, on_epoch_end: EpochHook | None = None,
) -> RunResult:  # fmt: skip
    """Learn the bandwidth of :class:`NWKernelRegression` on ``(x, y)`` by leave-one-out
    squared error with Adam and :func:`~d2lcore.train.fit`, one full-batch step per
    "epoch". Returns a :class:`~d2lcore.train.RunResult`: the loss per step in
    ``history.train_loss``, the learned ``bandwidth`` in ``metrics`` and the
    :class:`NWKernelRegression` in ``model``."""
    model = NWKernelRegression(bandwidth)
    loo = _LeaveOneOut(model, x, y)
    history = fit(loo, [(x, y)], loss_fn=nn.MSELoss(),
                  optimizer=torch.optim.Adam(model.parameters(), lr=lr),
                  num_epochs=num_steps, device=x.device, on_epoch_end=on_epoch_end)  # fmt: skip
    return RunResult(config={"bandwidth": bandwidth, "lr": lr, "num_steps": num_steps},
                     history=history, metrics={"bandwidth": model.bandwidth},
                     model=model)  # fmt: skip


# ----------------------------------------------------------------------------------
# Masked softmax and scoring functions


def sequence_mask(valid_lens: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> torch.Tensor:
    """A boolean mask of ``shape`` ``(B, Q, K)``: key ``k`` is visible when ``k < valid_len``.

    ``valid_lens`` is ``(B,)`` (the same length for every query of an example) or
    ``(B, Q)`` (one per query).
    """
    batch, num_queries, num_keys = shape
    if valid_lens.dim() == 1:
        valid_lens = valid_lens[:, None].expand(batch, num_queries)
    positions = torch.arange(num_keys, device=valid_lens.device)
    return positions[None, None, :] < valid_lens[:, :, None]  # (B, Q, K)


def masked_softmax(scores: torch.Tensor, valid_lens: torch.Tensor | None = None) -> torch.Tensor:
    """Softmax over the last axis of ``scores`` ``(B, Q, K)``, seeing only the first
    ``valid_len`` keys.

    Masked keys get weight exactly zero. A row with *no* visible key (valid length 0)
    gets all-zero weights, so attention returns a zero vector there: a defined result,
    never NaN, in the forward and the backward pass. (``d2l.masked_softmax`` fills with
    ``-1e6`` instead and returns uniform weights for such rows.)
    """
    if valid_lens is None:
        return torch.softmax(scores, dim=-1)
    mask = sequence_mask(valid_lens, scores.shape)
    # The most negative finite number, not -inf: exp underflows to exactly 0 for
    # masked keys, and an all-masked row stays finite (uniform), then zeroed below.
    filled = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(filled, dim=-1) * mask


def causal_mask(
    num_queries: int, num_keys: int | None = None, *, device: torch.device | str | None = None
) -> torch.Tensor:
    """The additive mask of causal attention, ``(Q, K)``: 0 where query ``i`` may see key
    ``j`` (``j <= i``), ``-inf`` above the diagonal. Added to the scores before the
    softmax, it gives the future keys weight exactly zero (as
    ``F.scaled_dot_product_attention(is_causal=True)`` aligns it: top left)."""
    num_keys = num_queries if num_keys is None else num_keys
    future = torch.ones(num_queries, num_keys, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(num_queries, num_keys, device=device).masked_fill(future, float("-inf"))


class _ScoredAttention(nn.Module):
    """Attention whose weights are the masked softmax of a score per (query, key):
    subclasses define ``scores``. The last weights, ``(B, Q, K)``, are kept in
    ``attention_weights``."""

    def __init__(self, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.attention_weights: torch.Tensor | None = None

    def scores(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """The score of every query ``(B, Q, q)`` against every key ``(B, K, k)``: ``(B, Q, K)``."""
        raise NotImplementedError

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
        valid_lens: torch.Tensor | None = None, *, causal: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        """``causal``: query ``i`` sees only keys ``0..i`` (:func:`causal_mask`)."""
        scores = self.scores(queries, keys)  # (B, Q, K)
        if causal:
            scores = scores + causal_mask(*scores.shape[1:], device=scores.device)
        self.attention_weights = masked_softmax(scores, valid_lens)
        return torch.bmm(self.dropout(self.attention_weights), values)  # (B, Q, v)


class AdditiveAttention(_ScoredAttention):
    """Additive attention: ``score(q, k) = w_v . tanh(W_q q + W_k k)``.

    Parameter names match ``d2l.AdditiveAttention`` so its weights load here.
    """

    def __init__(
        self, query_size: int, key_size: int, num_hiddens: int, dropout: float = 0.0
    ) -> None:
        super().__init__(dropout)
        self.W_q = nn.Linear(query_size, num_hiddens, bias=False)
        self.W_k = nn.Linear(key_size, num_hiddens, bias=False)
        self.w_v = nn.Linear(num_hiddens, 1, bias=False)

    def scores(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        # Every query against every key by broadcasting: (B, Q, 1, h) + (B, 1, K, h).
        features = torch.tanh(self.W_q(queries).unsqueeze(2) + self.W_k(keys).unsqueeze(1))
        return self.w_v(features).squeeze(-1)  # (B, Q, K)


class DotProductAttention(_ScoredAttention):
    """Scaled dot-product attention: ``softmax(Q K^T / sqrt(d)) V``.

    Dividing by ``sqrt(d)`` keeps the scores' variance near one whatever the width
    ``d``, so the softmax does not saturate into a one-hot choice as ``d`` grows.
    """

    def __init__(self, dropout: float = 0.0) -> None:
        super().__init__(dropout)

    def scores(self, queries: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        d = queries.shape[-1]
        return torch.bmm(queries, keys.transpose(1, 2)) / math.sqrt(d)  # (B, Q, K)


def softmax_entropy(weights: torch.Tensor) -> torch.Tensor:
    """Entropy (in nats) of each row of attention weights over the last axis."""
    return -(weights * torch.log(weights.clamp_min(1e-30))).sum(dim=-1)


def anti_diagonal_mass(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention weight that query ``i`` puts on key ``T - 1 - i``, for weights
    ``(..., T, T)``: 1 when every query looks only at its mirror position."""
    return weights.flip(-1).diagonal(dim1=-2, dim2=-1).mean(dim=-1)


# ----------------------------------------------------------------------------------
# Multi-head attention


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product attention, as ``torch.nn.MultiheadAttention``
    (batch first, biases on every projection) computes it.

    Each of ``num_heads`` heads attends with its own ``d_model / num_heads``-wide slice
    of the projected queries, keys and values; the heads' outputs are concatenated and
    mixed by ``W_o``. The last weights, ``(B, heads, Q, K)``, are kept in
    ``attention_weights``.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.W_q = nn.Linear(d_model, d_model)
        self.W_k = nn.Linear(d_model, d_model)
        self.W_v = nn.Linear(d_model, d_model)
        self.W_o = nn.Linear(d_model, d_model)
        self.attention = DotProductAttention(dropout)
        self.attention_weights: torch.Tensor | None = None

    def _split(self, X: torch.Tensor) -> torch.Tensor:
        # (B, T, d_model) -> (B * heads, T, d_model / heads): heads become batch entries.
        B, T, _ = X.shape
        X = X.reshape(B, T, self.num_heads, -1).permute(0, 2, 1, 3)
        return X.reshape(B * self.num_heads, T, -1)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
        valid_lens: torch.Tensor | None = None, *, causal: bool = False,
    ) -> torch.Tensor:  # fmt: skip
        B, Q, d_model = queries.shape
        if valid_lens is not None:
            # Every head of an example sees the same keys.
            valid_lens = valid_lens.repeat_interleave(self.num_heads, dim=0)
        out = self.attention(
            self._split(self.W_q(queries)), self._split(self.W_k(keys)),
            self._split(self.W_v(values)), valid_lens, causal=causal,
        )  # (B * heads, Q, d_model / heads)  # fmt: skip
        weights = self.attention.attention_weights
        assert weights is not None
        self.attention_weights = weights.reshape(B, self.num_heads, Q, -1)
        out = out.reshape(B, self.num_heads, Q, -1).permute(0, 2, 1, 3).reshape(B, Q, d_model)
        return self.W_o(out)

    @torch.no_grad()
    def load_torch_weights(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of a ``torch.nn.MultiheadAttention`` of the same size."""
        d = self.W_q.in_features
        for i, layer in enumerate((self.W_q, self.W_k, self.W_v)):
            layer.weight.copy_(mha.in_proj_weight[i * d : (i + 1) * d])
            layer.bias.copy_(mha.in_proj_bias[i * d : (i + 1) * d])
        self.W_o.weight.copy_(mha.out_proj.weight)
        self.W_o.bias.copy_(mha.out_proj.bias)
        return self


# ----------------------------------------------------------------------------------
# Positional encoding


def sinusoidal_encoding(max_len: int, d_model: int) -> torch.Tensor:
    """The ``(max_len, d_model)`` matrix ``P[i, 2j] = sin(i / 10000**(2j/d))``,
    ``P[i, 2j+1] = cos(i / 10000**(2j/d))``."""
    positions = torch.arange(max_len, dtype=torch.float32)[:, None]  # (T, 1)
    freqs = torch.pow(10000.0, -torch.arange(0, d_model, 2, dtype=torch.float32) / d_model)
    P = torch.zeros(max_len, d_model)
    P[:, 0::2] = torch.sin(positions * freqs)
    P[:, 1::2] = torch.cos(positions * freqs[: d_model // 2])
    return P


class PositionalEncoding(nn.Module):
    """Adds the sinusoidal encoding to ``(B, T, d_model)`` inputs, then dropout."""

    P: torch.Tensor

    def __init__(self, d_model: int, max_len: int = 1000, dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.register_buffer("P", sinusoidal_encoding(max_len, d_model), persistent=False)

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        return self.dropout(X + self.P[: X.shape[1]])


__all__ = [
    "AdditiveAttention", "DotProductAttention", "MultiHeadAttention", "NWKernelRegression",
    "PositionalEncoding", "anti_diagonal_mass", "causal_mask", "fit_bandwidth",
    "gaussian_attention_weights", "kernel_regression_data", "kernel_regression_target",
    "leave_one_out_keys", "masked_softmax", "nadaraya_watson", "sequence_mask",
    "sinusoidal_encoding", "softmax_entropy",
]  # fmt: skip
