"""The sequence tasks the Transformer of :mod:`d2lcore.transformer` learns: reversing
and sorting sequences of tokens (their data), and the best accuracy on reversal of a
model blind to order (:func:`order_blind_reversal_accuracy`), the baseline that shows
what positional encoding adds.
"""

from __future__ import annotations

import torch

from d2lcore.device import make_generator


def reversal_data(
    num_examples: int, seq_len: int, vocab_size: int, *, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token sequences ``X`` ``(n, seq_len)`` and their reversals ``Y``: the
    target at position ``i`` is the input at position ``seq_len - 1 - i``."""
    X = torch.randint(vocab_size, (num_examples, seq_len), generator=make_generator(seed))
    return X, X.flip(1)


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
