"""paddlefix.align: the tools for aligning a Paddle port with its PyTorch original.

    from paddlefix import align
    align.transfer(torch_model, paddle_model)           # copy weights by layer, exactly
    result = align.compare(paddle_model, torch_model, batch)
    with align.same_randomness(seed=0): ...              # the same dropout masks in both

The pairing of the two models' layers (:func:`pair`) is computed once and used by all three.
Importing this package imports neither paddle nor torch: they are imported when called.
"""

from __future__ import annotations


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


from .._lazy import lazy_names as _lazy_names  # noqa: E402

__getattr__, __dir__ = _lazy_names(__name__, _LAZY, globals())
