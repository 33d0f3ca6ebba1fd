"""kaiming_init: torch's Kaiming options, gains and init functions (not implemented yet)."""

from __future__ import annotations

from ..registry import Patch

SPEC = Patch(
    name="kaiming_init",
    summary="torch's Kaiming options (mode, nonlinearity, a), gains and paddle.nn.init functions",
    requires={"paddlepaddle|paddlepaddle-gpu": "<3.3"},
    module="paddle",
    probe=None,
    apply=None,
)
