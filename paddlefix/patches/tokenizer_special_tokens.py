"""tokenizer_special_tokens: never split special or added tokens (not implemented yet)."""

from __future__ import annotations

from ..registry import Patch

SPEC = Patch(
    name="tokenizer_special_tokens",
    summary="paddlenlp tokenizers never split special or added tokens, as Hugging Face does",
    requires={"paddlenlp": "<3"},
    module="paddlenlp.transformers",
    probe=None,
    apply=None,
    links=("PaddleNLP#801", "PaddleNLP#1231"),
)
