"""The Transformer: encoder and decoder blocks (post-norm or pre-norm) built from
:mod:`d2lcore.attention`'s multi-head attention and positional encoding, a small
encoder trained to reverse sequences (:func:`train_reversal`, with optional warm-up),
and an encoder-decoder trained to sort them (:func:`train_seq2seq`: teacher forcing,
greedy decoding). The tasks' data and their order-blind baseline are
:mod:`d2lcore.sequence_tasks`' (re-exported here).

Shapes follow PyTorch's batch-first convention: tokens ``(B, T)``, activations
``(B, T, d_model)``; logits ``(B, vocab, T)``, the layout ``F.cross_entropy`` takes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from d2lcore.attention import MultiHeadAttention, PositionalEncoding
from d2lcore.data import Split, Splits
from d2lcore.device import get_device
from d2lcore.init import init_weights
from d2lcore.sequence_tasks import order_blind_reversal_accuracy as order_blind_reversal_accuracy
from d2lcore.sequence_tasks import reversal_data as reversal_data
from d2lcore.sequence_tasks import sorting_data as sorting_data
from d2lcore.train import EpochHook, RunResult, fit, seeded

# ----------------------------------------------------------------------------------
# The model


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


# ----------------------------------------------------------------------------------
# Training


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


def train_reversal(
    config: TransformerConfig, train: Split, val: Split, *, test: Split | None = None,
    lr: float = 1e-3, num_epochs: int = 10, batch_size: int = 64, warmup_steps: int = 0,
    init: str = "default", seed: int = 0, device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
) -> RunResult:  # fmt: skip
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
    return _train_tokens(config, train, val, test, seq2seq=False, init=init, lr=lr,
                         num_epochs=num_epochs, batch_size=batch_size,
                         warmup_steps=warmup_steps, seed=seed, device=device,
                         on_epoch_end=on_epoch_end)  # fmt: skip


def train_seq2seq(
    config: TransformerConfig, train: Split, val: Split, *, test: Split | None = None,
    lr: float = 1e-3, num_epochs: int = 10, batch_size: int = 64, warmup_steps: int = 0,
    seed: int = 0, device: torch.device | str | None = None,
    on_epoch_end: EpochHook | None = None,
) -> RunResult:  # fmt: skip
    """Train a :class:`Seq2SeqTransformer` on pairs ``train = (source, target)`` with
    teacher forcing (the decoder reads the true target, shifted right), as
    :func:`train_reversal` trains the encoder: ``History.val_acc`` is the
    teacher-forced token accuracy on ``val``; ``test_acc`` the token accuracy of
    :func:`greedy_decode` on ``test``, where the decoder reads its own predictions.
    ``model`` is the :class:`Seq2SeqTransformer`."""
    # init="default": PyTorch's own initialization (train_seq2seq takes no init).
    return _train_tokens(config, train, val, test, seq2seq=True, init="default", lr=lr,
                         num_epochs=num_epochs, batch_size=batch_size,
                         warmup_steps=warmup_steps, seed=seed, device=device,
                         on_epoch_end=on_epoch_end)  # fmt: skip


def _train_tokens(
    config: TransformerConfig, train: Split, val: Split, test: Split | None, *,
    seq2seq: bool, init: str, lr: float, num_epochs: int, batch_size: int,
    warmup_steps: int, seed: int, device: torch.device | str | None,
    on_epoch_end: EpochHook | None,
) -> RunResult:  # fmt: skip
    """What :func:`train_reversal` does and, with ``seq2seq``, :func:`train_seq2seq`:
    Adam with cross-entropy per token, through :func:`~d2lcore.train.fit`, the learning
    rate rising linearly over the first ``warmup_steps`` steps."""
    device = get_device(device)
    model: nn.Module
    trained: nn.Module
    with seeded(seed):  # the initial weights, then the dropout masks
        if seq2seq:
            model = Seq2SeqTransformer(config).to(device)
            # fit hands a model one tensor: the sources packed with the decoder's inputs.
            trained = _TeacherForced(model)
            train, val = _packed(train, config.vocab_size), _packed(val, config.vocab_size)
        else:
            model = trained = init_weights(TransformerEncoder(config), init).to(device)
        X_val, Y_val = (t.to(device) for t in val)
        loss_fn = nn.CrossEntropyLoss()

        def per_token(module: nn.Module) -> dict[str, float]:
            return {"val_loss": float(loss_fn(module(X_val), Y_val)),
                    "val_acc": token_accuracy(module, X_val, Y_val)}  # fmt: skip

        loader = Splits(train, batch_size=batch_size, seed=seed).loader(device=device)
        optimizer = torch.optim.Adam(trained.parameters(), lr=lr)
        scheduler = None
        if warmup_steps > 0:
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: min(1.0, (step + 1) / warmup_steps))
        history = fit(trained, loader, loss_fn=loss_fn, optimizer=optimizer,
                      num_epochs=num_epochs, evaluate=per_token, device=device,
                      on_epoch_end=on_epoch_end, scheduler=scheduler)  # fmt: skip
    test_acc = None
    if test is not None and not history.diverged:
        X, Y = (t.to(device) for t in test)
        if isinstance(model, Seq2SeqTransformer):  # the decoder reads its own predictions
            test_acc = float((greedy_decode(model, X, Y.shape[1]) == Y).float().mean())
        else:
            test_acc = token_accuracy(model, X, Y)
    run_config = {**asdict(config), "lr": lr, "num_epochs": num_epochs,
                  "batch_size": batch_size, "warmup_steps": warmup_steps,
                  **({} if seq2seq else {"init": init}), "seed": seed}  # fmt: skip
    return RunResult(config=run_config, history=history, test_acc=test_acc, model=model)


def _packed(split: Split, bos: int) -> Split:
    """The sources of ``split`` packed with the decoder's inputs ``(n, 2, T)``, and the
    targets."""
    src, tgt = split
    return torch.stack([src, shift_right(tgt, bos)], dim=1), tgt


__all__ = [
    "DecoderBlock", "EncoderBlock", "Seq2SeqTransformer", "TransformerConfig",
    "TransformerEncoder", "greedy_decode", "order_blind_reversal_accuracy",
    "position_wise_ffn", "residual", "reversal_data", "shift_right", "sorting_data",
    "token_accuracy", "train_reversal", "train_seq2seq",
]  # fmt: skip
