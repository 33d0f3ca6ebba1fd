"""Errors raised by paddlefix.align (one class per tool)."""

from __future__ import annotations

__all__ = ["TransferError", "AlignError", "RandomnessError"]


class TransferError(ValueError):
    """``transfer`` cannot copy the weights as asked; the destination is left unchanged (strict)."""


class AlignError(ValueError):
    """``compare`` / ``record`` got input it cannot use (models, inputs, loss, optimizers, steps)."""


class RandomnessError(RuntimeError):
    """``same_randomness``: the two frameworks' random calls do not correspond, or the context is misused."""
