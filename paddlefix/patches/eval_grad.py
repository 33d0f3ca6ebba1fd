"""eval_grad: backward through layers in eval mode (not implemented yet)."""

from __future__ import annotations

from ..registry import Patch

SPEC = Patch(
    name="eval_grad",
    summary="backward works in eval mode (dropout / batch norm grad kernels refused is_test)",
    requires={"paddlepaddle|paddlepaddle-gpu": "<2.2.1"},
    module="paddle",
    probe=None,
    apply=None,
    fixed_in="2.2.1",
    links=("Paddle#30938", "Paddle#33277", "Paddle#34293", "Paddle#32399", "Paddle#37305", "Paddle#37331"),
)
