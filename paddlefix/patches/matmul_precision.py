"""matmul_precision: PyTorch's float32 matmul precision API for Paddle (not implemented yet)."""

from __future__ import annotations

from ..registry import Patch

SPEC = Patch(
    name="matmul_precision",
    summary="float32 matmul precision as in PyTorch: TF32 off by default, optional float64 accumulation",
    requires={"paddlepaddle|paddlepaddle-gpu": ">=0"},
    module="paddle",
    probe=None,
    apply=None,
    links=("Paddle#35123", "Paddle#54208", "Paddle#75041"),
)
