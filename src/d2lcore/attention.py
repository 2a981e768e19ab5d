"""Attention: kernel regression as attention pooling, masked softmax, additive and
scaled dot-product attention (with an optional causal mask), multi-head attention,
sinusoidal positional encoding, a small Transformer encoder trained to reverse
sequences (post-norm or pre-norm, with optional warm-up), and an encoder-decoder
Transformer trained to sort them (teacher forcing, greedy decoding).

Shapes follow PyTorch's batch-first convention: queries ``(B, Q, d)``, keys
``(B, K, d)``, values ``(B, K, v)``; attention weights ``(B, Q, K)`` (one row of
weights per query, summing to one over the keys it may see).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from d2lcore.data import Split, Splits
from d2lcore.device import get_device, make_generator
from d2lcore.init import init_weights
from d2lcore.train import EpochHook, History, RunResult, fit, seeded

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


# ----------------------------------------------------------------------------------
# A small Transformer encoder and the sequence-reversal task


def reversal_data(
    num_examples: int, seq_len: int, vocab_size: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences ``X`` ``(n, seq_len)`` and their reversals ``Y``: the
    target at position ``i`` is the input at position ``seq_len - 1 - i``."""
    X = torch.randint(vocab_size, (num_examples, seq_len), generator=make_generator(seed))
    return X, X.flip(1)


@dataclass
class TransformerConfig:
    """Size of a :class:`TransformerEncoder` (or :class:`Seq2SeqTransformer`, with
    ``num_layers`` encoder and as many decoder blocks). ``positional=False`` leaves out
    the positional encoding (an ablation: the model is then blind to order);
    ``norm_first`` puts layer normalization before each residual branch (pre-norm)
    instead of after the residual sum (post-norm, the original Transformer)."""

    vocab_size: int = 10
    seq_len: int = 8
    d_model: int = 32
    num_heads: int = 2
    num_layers: int = 1
    ffn_hiddens: int = 64
    dropout: float = 0.0
    positional: bool = True
    norm_first: bool = False


def residual(
    X: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor], norm: nn.Module,
    dropout: nn.Module, *, norm_first: bool,
) -> torch.Tensor:  # fmt: skip
    """One residual branch with layer normalization: post-norm ``norm(X + branch(X))``
    (the original Transformer) or pre-norm ``X + branch(norm(X))``, which leaves the
    residual path from input to output free of normalization."""
    if norm_first:
        return X + dropout(branch(norm(X)))
    return norm(X + dropout(branch(X)))


def position_wise_ffn(config: TransformerConfig) -> nn.Sequential:
    """The position-wise MLP ``d_model -> ffn_hiddens -> d_model``: ``nn.Linear`` acts on
    the last axis, so the same MLP transforms every position alone."""
    d = config.d_model
    return nn.Sequential(nn.Linear(d, config.ffn_hiddens), nn.ReLU(),
                         nn.Linear(config.ffn_hiddens, d))  # fmt: skip


class EncoderBlock(nn.Module):
    """Self-attention and a position-wise MLP, each in a residual branch with layer
    normalization (:func:`residual`: post-norm, or pre-norm with ``config.norm_first``)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm_first = config.norm_first
        self.attention = MultiHeadAttention(d, config.num_heads, config.dropout)
        self.norm1 = nn.LayerNorm(d)
        self.ffn = position_wise_ffn(config)
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, X: torch.Tensor, valid_lens: torch.Tensor | None = None) -> torch.Tensor:
        X = residual(X, lambda H: self.attention(H, H, H, valid_lens), self.norm1,
                     self.dropout, norm_first=self.norm_first)  # fmt: skip
        return residual(X, self.ffn, self.norm2, self.dropout, norm_first=self.norm_first)


class DecoderBlock(nn.Module):
    """Causal self-attention over the target so far, cross-attention from it to the
    encoder's outputs (queries from the decoder; keys and values from the encoder), and
    a position-wise MLP, each in a residual branch with layer normalization."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm_first = config.norm_first
        self.self_attention = MultiHeadAttention(d, config.num_heads, config.dropout)
        self.cross_attention = MultiHeadAttention(d, config.num_heads, config.dropout)
        self.ffn = position_wise_ffn(config)
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(3))
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self, Y: torch.Tensor, memory: torch.Tensor, memory_valid_lens: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``Y`` ``(B, T, d)``: the decoder's inputs; ``memory`` ``(B, S, d)``: the encoder's
        outputs."""
        branches: tuple[Callable[[torch.Tensor], torch.Tensor], ...] = (
            lambda H: self.self_attention(H, H, H, causal=True),
            lambda H: self.cross_attention(H, memory, memory, memory_valid_lens),
            self.ffn,
        )
        for norm, branch in zip(self.norms, branches, strict=True):
            Y = residual(Y, branch, norm, self.dropout, norm_first=self.norm_first)
        return Y


class TransformerEncoder(nn.Module):
    """Token embedding, sinusoidal positions, encoder blocks and a per-position
    classifier: ``(B, T)`` token ids to ``(B, vocab, T)`` logits (the layout
    ``F.cross_entropy`` takes for per-token targets ``(B, T)``)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = nn.Embedding(config.vocab_size, config.d_model)
        # Without positions only the dropout is left: nothing in the model then tells
        # position i from position j.
        self.positions: nn.Module = (
            PositionalEncoding(config.d_model, config.seq_len, config.dropout)
            if config.positional else nn.Dropout(config.dropout)
        )  # fmt: skip
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        # Pre-norm leaves the residual sum unnormalized: one last norm before the head.
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        self.head = nn.Linear(config.d_model, config.vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        # Not scaled up by sqrt(d_model): reversal is all about positions, and an
        # embedding as large as the encoding's +-1 lets the position signal through.
        X = self.positions(self.embedding(tokens))  # (B, T, d_model)
        for block in self.blocks:
            X = block(X)
        return self.head(self.final_norm(X)).transpose(1, 2)  # (B, vocab, T)

    def attention_maps(self) -> list[torch.Tensor]:
        """Each layer's last attention weights, ``(B, heads, T, T)``."""
        return _last_weights(b.attention for b in self.blocks if isinstance(b, EncoderBlock))


class Seq2SeqTransformer(nn.Module):
    """An encoder-decoder Transformer. The encoder reads the source ``(B, S)``; the
    decoder predicts each target token from the target tokens before it (after a
    beginning-of-sequence token, id :attr:`bos` ``= vocab_size``) and, through
    cross-attention, from the encoder's outputs. ``forward(src, tgt_in)`` returns the
    logits ``(B, vocab, T)`` of every target position at once (teacher forcing:
    ``tgt_in`` is the target shifted right, :func:`shift_right`)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.bos = config.vocab_size
        d = config.d_model
        self.src_embedding = nn.Embedding(config.vocab_size, d)
        self.tgt_embedding = nn.Embedding(config.vocab_size + 1, d)  # + the BOS token
        self.positions = PositionalEncoding(d, config.seq_len, config.dropout)
        self.encoder = nn.ModuleList(EncoderBlock(config) for _ in range(config.num_layers))
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.num_layers))
        final = nn.LayerNorm if config.norm_first else (lambda _: nn.Identity())
        self.encoder_norm, self.decoder_norm = final(d), final(d)
        self.head = nn.Linear(d, config.vocab_size)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """The encoder's outputs ``(B, S, d_model)``."""
        X = self.positions(self.src_embedding(src))
        for block in self.encoder:
            X = block(X)
        return self.encoder_norm(X)

    def decode(self, tgt_in: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, vocab, T)`` of the token after each of ``tgt_in`` ``(B, T)``."""
        Y = self.positions(self.tgt_embedding(tgt_in))
        for block in self.decoder:
            Y = block(Y, memory)
        return self.head(self.decoder_norm(Y)).transpose(1, 2)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:
        return self.decode(tgt_in, self.encode(src))

    def cross_attention_maps(self) -> list[torch.Tensor]:
        """Each decoder layer's last cross-attention weights, ``(B, heads, T, S)``."""
        return _last_weights(b.cross_attention for b in self.decoder
                             if isinstance(b, DecoderBlock))  # fmt: skip


def _last_weights(attentions: Iterable[MultiHeadAttention]) -> list[torch.Tensor]:
    """The weights each of ``attentions`` computed in the model's last forward pass."""
    maps = []
    for attention in attentions:
        if attention.attention_weights is None:
            raise RuntimeError("run the model on a batch first")
        maps.append(attention.attention_weights)
    return maps


def shift_right(Y: torch.Tensor, bos: int) -> torch.Tensor:
    """The decoder's inputs for targets ``Y`` ``(B, T)``: ``bos``, then ``Y`` without its
    last token. With them the decoder predicts ``Y[:, t]`` from ``Y[:, :t]``."""
    return torch.cat([torch.full_like(Y[:, :1], bos), Y[:, :-1]], dim=1)


@torch.no_grad()
def greedy_decode(model: Seq2SeqTransformer, src: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Decode ``num_steps`` tokens ``(B, num_steps)`` for the sources ``src`` ``(B, S)``,
    each the most likely next token given the ones decoded before it (evaluation mode).
    The decoder reads its own predictions, not the true target."""
    was_training = model.training
    model.eval()
    memory = model.encode(src)
    out = torch.full((len(src), 1), model.bos, dtype=torch.long, device=src.device)
    for _ in range(num_steps):
        logits = model.decode(out, memory)  # (B, vocab, t): causal, so only the last is new
        out = torch.cat([out, logits[:, :, -1].argmax(dim=1, keepdim=True)], dim=1)
    model.train(was_training)
    return out[:, 1:]


class _TeacherForced(nn.Module):
    """``model(src, tgt_in)`` for inputs packed as ``(B, 2, T)``: what
    :func:`~d2lcore.train.fit`, which hands a model one tensor, trains."""

    def __init__(self, model: Seq2SeqTransformer) -> None:
        super().__init__()
        self.model = model

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        return self.model(packed[:, 0], packed[:, 1])


@torch.no_grad()
def token_accuracy(model: nn.Module, X: torch.Tensor, Y: torch.Tensor) -> float:
    """Fraction of target tokens the model predicts right (evaluation mode)."""
    was_training = model.training
    model.eval()
    correct = (model(X).argmax(dim=1) == Y).float().mean()
    model.train(was_training)
    return float(correct)


def _fit_tokens(
    model: nn.Module, train: Split, val: Split, *, lr: float, num_epochs: int,
    batch_size: int, warmup_steps: int, seed: int, device: torch.device,
    on_epoch_end: EpochHook | None,
) -> History:  # fmt: skip
    """Adam with cross-entropy per token, through :func:`~d2lcore.train.fit`; the
    learning rate rises linearly over the first ``warmup_steps`` steps."""
    X_val, Y_val = (t.to(device) for t in val)
    loss_fn = nn.CrossEntropyLoss()

    def per_token(model: nn.Module) -> dict[str, float]:
        return {"val_loss": float(loss_fn(model(X_val), Y_val)),
                "val_acc": token_accuracy(model, X_val, Y_val)}  # fmt: skip

    loader = Splits(train, batch_size=batch_size, seed=seed).loader(device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    scheduler = None
    if warmup_steps > 0:
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
    return fit(model, loader, loss_fn=loss_fn, optimizer=optimizer, num_epochs=num_epochs,
               evaluate=per_token, device=device, on_epoch_end=on_epoch_end,
               scheduler=scheduler)  # fmt: skip


def train_reversal(
    config: TransformerConfig,
    train: Split,
    val: Split,
    *,
    test: Split | None = None,
    lr: float = 1e-3,
    num_epochs: int = 10,
    batch_size: int = 64,
    warmup_steps: int = 0,
    init: str = "default",
    seed: int = 0,
    device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
) -> RunResult:
    """Train a :class:`TransformerEncoder` on ``train = (X, Y)`` with Adam and
    :func:`~d2lcore.train.fit`; ``History.val_loss`` and ``val_acc`` are per *token*
    on ``val`` (measured by ``fit``'s evaluation function: ``fit``'s own evaluation
    counts accuracy per example), ``test_acc`` the token accuracy on ``test``.

    ``warmup_steps``: the learning rate rises linearly from ``lr / warmup_steps`` to
    ``lr`` over the first steps (0: no warm-up). ``init`` is a scheme of
    :func:`~d2lcore.init.init_weights` for the linear layers; ``seed`` fixes the initial
    weights, the minibatch order and the dropout masks (drawn from torch's global
    generator inside :func:`~d2lcore.train.seeded`, which leaves the caller's random
    state as it was).
    """
    device = get_device(device)
    with seeded(seed):
        model = init_weights(TransformerEncoder(config), init).to(device)
        history = _fit_tokens(model, train, val, lr=lr, num_epochs=num_epochs,
                              batch_size=batch_size, warmup_steps=warmup_steps, seed=seed,
                              device=device, on_epoch_end=on_epoch_end)  # fmt: skip
    test_acc = None
    if test is not None and not history.diverged:
        test_acc = token_accuracy(model, *(t.to(device) for t in test))
    run_config = {**asdict(config), "lr": lr, "num_epochs": num_epochs,
                  "batch_size": batch_size, "warmup_steps": warmup_steps, "init": init,
                  "seed": seed}  # fmt: skip
    return RunResult(config=run_config, history=history, test_acc=test_acc, model=model)


def train_seq2seq(
    config: TransformerConfig,
    train: Split,
    val: Split,
    *,
    test: Split | None = None,
    lr: float = 1e-3,
    num_epochs: int = 10,
    batch_size: int = 64,
    warmup_steps: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
) -> RunResult:
    """Train a :class:`Seq2SeqTransformer` on pairs ``train = (source, target)`` with
    teacher forcing (the decoder reads the true target, shifted right), as
    :func:`train_reversal` trains the encoder: ``History.val_acc`` is the
    teacher-forced token accuracy on ``val``; ``test_acc`` the token accuracy of
    :func:`greedy_decode` on ``test``, where the decoder reads its own predictions.
    ``model`` is the :class:`Seq2SeqTransformer`."""
    device = get_device(device)
    bos = config.vocab_size

    def packed(split: Split) -> Split:  # ((n, 2, T) source and decoder inputs, targets)
        src, tgt = split
        return torch.stack([src, shift_right(tgt, bos)], dim=1), tgt

    with seeded(seed):
        model = Seq2SeqTransformer(config).to(device)
        history = _fit_tokens(_TeacherForced(model), packed(train), packed(val), lr=lr,
                              num_epochs=num_epochs, batch_size=batch_size,
                              warmup_steps=warmup_steps, seed=seed, device=device,
                              on_epoch_end=on_epoch_end)  # fmt: skip
    test_acc = None
    if test is not None and not history.diverged:
        src, tgt = (t.to(device) for t in test)
        test_acc = float((greedy_decode(model, src, tgt.shape[1]) == tgt).float().mean())
    run_config = {**asdict(config), "lr": lr, "num_epochs": num_epochs,
                  "batch_size": batch_size, "warmup_steps": warmup_steps, "seed": seed}  # fmt: skip
    return RunResult(config=run_config, history=history, test_acc=test_acc, model=model)


def sorting_data(
    num_examples: int, seq_len: int, vocab_size: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences ``X`` ``(n, seq_len)`` and the same tokens sorted."""
    X = torch.randint(vocab_size, (num_examples, seq_len), generator=make_generator(seed))
    return X, X.sort(dim=1).values


def order_blind_reversal_accuracy(X: torch.Tensor) -> float:
    """The best expected per-token accuracy of a model blind to order on reversing the
    sequences ``X`` ``(n, T)`` of independent, uniform tokens.

    Without positions, self-attention, the position-wise layers and layer norm treat
    every position alike: the output at position ``i`` depends only on the token there
    and on the multiset of all tokens. Given those, the target ``X[T - 1 - i]`` is a
    uniform draw from the *other* ``T - 1`` tokens (every arrangement is equally
    likely), so the best guess is their most frequent token, right with probability
    (its count) / (T - 1). For an odd ``T`` the middle position is its own target, and
    the model cannot tell it apart: over all positions the target is then a uniform draw
    from all ``T`` tokens. Returns the mean of that probability over ``X``'s tokens.
    """
    n, T = X.shape
    vocab = int(X.max()) + 1
    counts = torch.zeros(n, vocab).scatter_add_(1, X, torch.ones(n, T))  # (n, vocab)
    if T % 2:
        return float((counts.max(dim=1).values / T).mean())
    total = 0.0
    for i in range(T):
        others = counts.clone()
        others[torch.arange(n), X[:, i]] -= 1  # the multiset without token i
        total += float((others.max(dim=1).values / (T - 1)).sum())
    return total / (n * T)


def anti_diagonal_mass(weights: torch.Tensor) -> torch.Tensor:
    """Mean attention weight that query ``i`` puts on key ``T - 1 - i``, for weights
    ``(..., T, T)``: 1 when every query looks only at its mirror position."""
    return weights.flip(-1).diagonal(dim1=-2, dim2=-1).mean(dim=-1)


__all__ = [
    "AdditiveAttention", "DecoderBlock", "DotProductAttention", "EncoderBlock",
    "MultiHeadAttention", "NWKernelRegression", "PositionalEncoding", "Seq2SeqTransformer",
    "TransformerConfig", "TransformerEncoder", "greedy_decode", "position_wise_ffn",
    "residual", "shift_right", "sorting_data", "train_seq2seq",
    "anti_diagonal_mass", "causal_mask", "fit_bandwidth", "gaussian_attention_weights",
    "kernel_regression_data", "kernel_regression_target", "leave_one_out_keys",
    "masked_softmax", "nadaraya_watson", "order_blind_reversal_accuracy", "reversal_data",
    "sequence_mask", "sinusoidal_encoding", "softmax_entropy", "token_accuracy",
    "train_reversal",
]  # fmt: skip
