"""One module per patch; each declares ``SPEC`` (a :class:`paddlefix.registry.Patch`).

Patch modules must not import paddle or paddlenlp at module level: they are loaded by
``import paddlefix``.
"""

from __future__ import annotations

from ..registry import Patch

#: Registry order: also the order in which patches are applied and reported.
NAMES = (
    "matmul_precision",
    "tokenizer_special_tokens",
    "attention_mask",
    "cross_entropy",
    "kaiming_init",
    "eval_grad",
    "pretrained_init",
    "nan_guard",
    "torch_defaults",
)


def load_specs() -> list[Patch]:
    import importlib

    return [importlib.import_module(f"{__name__}.{name}").SPEC for name in NAMES]
