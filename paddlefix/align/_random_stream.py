"""The framework-independent values of same_randomness: NumPy arrays from one Generator.

Both framework modules call these with the Generator of the k-th call, so the k-th random
call of Paddle and of torch get the same arrays (cast to each one's dtype afterwards).
"""

from __future__ import annotations

from typing import Any

# torch's alpha-dropout constant (ATen Dropout.cpp): -SELU scale * SELU alpha.
TORCH_ALPHA = 1.7580993408473766
# Paddle's (paddle.nn.functional.alpha_dropout).
PADDLE_SELU_ALPHA = 1.6732632423543772848170429916717
PADDLE_SELU_SCALE = 1.0507009873554804934193349852946


def keep_mask(rng: Any, shape: tuple[int, ...], p: float) -> Any:
    """Boolean keep mask: ``uniform[0, 1) >= p`` in float32 (kept with probability 1 - p)."""
    import numpy as np

    return rng.random(shape, dtype=np.float32) >= np.float32(p)


def uniform(rng: Any, shape: tuple[int, ...]) -> Any:
    return rng.random(shape)  # float64: the same values whatever dtype each side asks for


def standard_normal(rng: Any, shape: tuple[int, ...]) -> Any:
    return rng.standard_normal(shape)


def normal(rng: Any, mean: Any, std: Any, shape: tuple[int, ...]) -> Any:
    return mean + std * rng.standard_normal(shape)


def integers(rng: Any, low: int, high: int, shape: tuple[int, ...]) -> Any:
    import numpy as np

    if high <= low:
        raise ValueError(f"randint: high ({high}) must be greater than low ({low})")
    return rng.integers(low, high, size=shape, dtype=np.int64)


def bernoulli(rng: Any, probs: Any) -> Any:
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    if probs.size and (probs.min() < 0 or probs.max() > 1):
        raise ValueError("bernoulli: probabilities must be in [0, 1]")
    return rng.random(probs.shape) < probs


def permutation(rng: Any, n: int) -> Any:
    import numpy as np

    if n < 0:
        raise ValueError(f"randperm: n must be non-negative, got {n}")
    return rng.permutation(n).astype(np.int64)


def multinomial(rng: Any, probs: Any, num_samples: int, replacement: bool) -> Any:
    import numpy as np

    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim not in (1, 2):
        raise ValueError(f"multinomial: probabilities must be 1-D or 2-D, got {probs.ndim}-D")
    rows = probs.reshape(-1, probs.shape[-1])
    out = np.empty((rows.shape[0], num_samples), dtype=np.int64)
    for i, row in enumerate(rows):
        total = row.sum()
        if not np.isfinite(total) or total <= 0 or (row < 0).any():
            raise ValueError("multinomial: each row must have non-negative, finite weights with a positive sum")
        if not replacement and num_samples > int((row > 0).sum()):
            raise ValueError(
                f"multinomial: cannot draw {num_samples} samples without replacement from a row "
                f"with {int((row > 0).sum())} non-zero weights"
            )
        out[i] = rng.choice(row.shape[0], size=num_samples, replace=replacement, p=row / total)
    return out.reshape(probs.shape[:-1] + (num_samples,))
