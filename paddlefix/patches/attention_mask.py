"""attention_mask: BertModel and family accept every Hugging Face mask form (not implemented yet)."""

from __future__ import annotations

from ..registry import Patch

SPEC = Patch(
    name="attention_mask",
    summary="BertModel (and family) accept every Hugging Face attention_mask form; masked positions never leak",
    requires={"paddlenlp": "<3"},
    module="paddlenlp.transformers",
    probe=None,
    apply=None,
    links=("PaddleNLP#1226",),
)
