"""Shared helpers for ``bench/run.py``: rows of side-by-side ratios."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


BERT_BASE: dict[str, int] = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
)
"""BERT-base shape (110 M parameters with its embeddings), as config keyword arguments."""


@dataclass(frozen=True)
class Row:
    """One benchmark line: ``ratio`` = measured / baseline, compared with ``goal``."""

    name: str
    ratio: float
    goal: float | None
    detail: str = ""

    @property
    def ok(self) -> bool | None:
        return None if self.goal is None else self.ratio <= self.goal


def best_of(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best (minimum) mean seconds per call of ``fn`` over ``repeat`` rounds of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def compare(a: Callable[[], object], b: Callable[[], object], number: int, repeat: int) -> tuple[float, float]:
    """Time ``a`` and ``b`` interleaved (a, b, a, b, ...) so drift hits both; best per-call seconds."""
    best_a = best_b = float("inf")
    for _ in range(repeat):
        best_a = min(best_a, best_of(a, number, 1))
        best_b = min(best_b, best_of(b, number, 1))
    return best_a, best_b
