"""paddlefix.align: the tools for aligning a Paddle port with its PyTorch original.

    from paddlefix import align
    align.transfer(torch_model, paddle_model)           # copy weights by layer, exactly
    result = align.compare(paddle_model, torch_model, batch)
    with align.same_randomness(seed=0): ...              # the same dropout masks in both

The pairing of the two models' layers (:func:`pair`) is computed once and used by all three.
Importing this package imports neither paddle nor torch: they are imported when called.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "pair",
    "Pair",
    "Pairing",
    "transfer",
    "TransferReport",
    "TransferError",
    "compare",
    "assert_aligned",
    "record",
    "AlignResult",
    "AlignError",
    "Divergence",
    "same_randomness",
    "RandomnessError",
]

# Public name -> the private module that defines it (resolved on first use).
_LAZY = {
    "pair": "._pairing",
    "Pair": "._pairing",
    "Pairing": "._pairing",
    "transfer": "._transfer",
    "TransferReport": "._transfer",
    "TransferError": "._errors",
    "compare": "._compare",
    "assert_aligned": "._compare",
    "record": "._record",
    "AlignResult": "._report",
    "AlignError": "._errors",
    "Divergence": "._report",
    "same_randomness": "._randomness",
    "RandomnessError": "._errors",
}


def __getattr__(name: str) -> Any:
    target = _LAZY.get(name)
    if target is None:
        raise AttributeError(f"module 'paddlefix.align' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(target, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
