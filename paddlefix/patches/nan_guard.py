"""nan_guard (opt-in): never apply a non-finite gradient (not implemented yet)."""

from __future__ import annotations

from ..registry import Patch

SPEC = Patch(
    name="nan_guard",
    summary="optimizer steps with a NaN/Inf gradient are skipped (or raise), never applied",
    requires={"paddlepaddle|paddlepaddle-gpu": ">=0"},
    module="paddle",
    probe=None,
    apply=None,
    default=False,
    links=("Paddle#36665",),
)
