"""Hugging Face ``transformers`` <-> paddlenlp parameter names for the BERT family.

Both libraries name the same BERT layers differently (HF ``encoder.layer.0.attention.self.query``,
paddlenlp ``encoder.layers.0.self_attn.q_proj``). The rules are layer-path rewrites, matched
anywhere after a dot so that any prefix (``bert.``, ``roberta.``, a user's ``splinter.`` mapped
to ``bert.``) is kept. Where paddlenlp ships its own table for a model class
(``_get_name_mappings``, used by its ``conversion_utils``), the rules are read from it; the
built-in table below covers the heads it leaves out (masked-LM, question answering) and
models without a table (ERNIE). Transforms never come from here: the layer types decide them.
"""

from __future__ import annotations

import copy
import functools
import logging
import re
import sys
from typing import Any, NamedTuple

__all__ = ["NameRule", "Rewriter", "name_rules", "hf_to_paddle_paths", "paddle_to_hf_paths", "BUILTIN_RULES"]

_LOG = logging.getLogger("paddlefix.align")


class NameRule(NamedTuple):
    """One rewrite between an HF path and a paddlenlp path (``N`` stands for a layer index)."""

    hf: str
    paddle: str
    family: str
    """Where it comes from: ``"bert"`` (built in) or ``"paddlenlp:<Class>"``."""


# Layer paths (no parameter names); "N" is any layer index. Local names that differ between
# the two libraries are written as full parameter paths with a leading "@" (param-level rules).
_ENCODER = [
    ("embeddings.LayerNorm", "embeddings.layer_norm"),
    ("encoder.layer.N.attention.self.query", "encoder.layers.N.self_attn.q_proj"),
    ("encoder.layer.N.attention.self.key", "encoder.layers.N.self_attn.k_proj"),
    ("encoder.layer.N.attention.self.value", "encoder.layers.N.self_attn.v_proj"),
    ("encoder.layer.N.attention.output.dense", "encoder.layers.N.self_attn.out_proj"),
    ("encoder.layer.N.attention.output.LayerNorm", "encoder.layers.N.norm1"),
    ("encoder.layer.N.intermediate.dense", "encoder.layers.N.linear1"),
    ("encoder.layer.N.output.dense", "encoder.layers.N.linear2"),
    ("encoder.layer.N.output.LayerNorm", "encoder.layers.N.norm2"),
]
_HEADS = [
    # BertForMaskedLM / BertForPreTraining: HF BertPredictionHeadTransform is split in paddlenlp.
    ("cls.predictions.transform.dense", "cls.predictions.transform"),
    ("cls.predictions.transform.LayerNorm", "cls.predictions.layer_norm"),
    ("@cls.predictions.bias", "@cls.predictions.decoder_bias"),
    # BertForQuestionAnswering
    ("qa_outputs", "classifier"),
    # ELECTRA: HF keeps the generator / discriminator heads under other names
    ("discriminator_predictions.dense_prediction", "discriminator_predictions.dense_prediction"),
]

BUILTIN_RULES: tuple[NameRule, ...] = tuple(NameRule(h, p, "bert") for h, p in _ENCODER + _HEADS)


def _from_paddlenlp(model: Any) -> list[NameRule]:
    """Rules read from paddlenlp's own ``_get_name_mappings`` for this model's class, if it has one."""
    if "paddlenlp" not in sys.modules or model is None:
        return []
    cls = type(model)
    fn = getattr(cls, "_get_name_mappings", None)
    config = getattr(model, "config", None)
    if fn is None or config is None:
        return []
    base = None
    for klass in cls.__mro__:
        if getattr(klass, "base_model_prefix", None) and klass.__name__.endswith("PretrainedModel"):
            base = klass.__name__.replace("PretrainedModel", "Model")
            break
    try:
        cfg = copy.copy(config)
        cfg.num_hidden_layers = 1
        cfg.architectures = [base or cls.__name__]
        mappings = fn.__func__(cls, cfg) if hasattr(fn, "__func__") else fn(cfg)
    except Exception as exc:  # a third-party table that does not build for this config: fall back
        _LOG.debug("paddlenlp name mappings of %s unusable: %s", cls.__name__, exc)
        return []
    rules: list[NameRule] = []
    seen: set[tuple[str, str]] = set()
    for m in mappings:
        src, dst = getattr(m, "source_name", None), getattr(m, "target_name", None)
        if not src or not dst:
            continue
        # Strip the base-model prefix paddlenlp prepends for some classes, the layer index, the local name.
        prefixes: set[str] = {"bert", "roberta", "electra", "ernie"}
        if isinstance(getattr(cls, "base_model_prefix", None), str):
            prefixes.add(cls.base_model_prefix)
        for prefix in prefixes:
            src = src[len(prefix) + 1 :] if src.startswith(f"{prefix}.") else src
            dst = dst[len(prefix) + 1 :] if dst.startswith(f"{prefix}.") else dst
        src = re.sub(r"(^|\.)0(\.|$)", r"\1N\2", src)
        dst = re.sub(r"(^|\.)0(\.|$)", r"\1N\2", dst)
        s_path, _, s_local = src.rpartition(".")
        d_path, _, d_local = dst.rpartition(".")
        key = (s_path, d_path) if s_local == d_local else ("@" + src, "@" + dst)
        if key in seen or key[0] == key[1]:
            continue
        seen.add(key)
        rules.append(NameRule(key[0], key[1], f"paddlenlp:{cls.__name__}"))
    return rules


def name_rules(paddle_model: Any = None) -> list[NameRule]:
    """paddlenlp's own rules for this model's class (when it ships them), then the built-in table."""
    rules = _from_paddlenlp(paddle_model)
    have = {(r.hf, r.paddle) for r in rules}
    return rules + [r for r in BUILTIN_RULES if (r.hf, r.paddle) not in have]


@functools.lru_cache(maxsize=4096)
def _pattern(template: str) -> re.Pattern[str]:
    body = r"\.".join(r"(\d+)" if part == "N" else re.escape(part) for part in template.split("."))
    return re.compile(r"(^|.*\.)" + body + r"$")


def _fill(template: str, indices: list[str]) -> str:
    parts = template.split(".")
    it = iter(indices)
    return ".".join(next(it, part) if part == "N" else part for part in parts)


@functools.lru_cache(maxsize=64)
def _index(rules: tuple[NameRule, ...], to_paddle: bool, params: bool) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...], tuple[tuple[re.Pattern[str], str, NameRule], ...]]:
    """The rules of one direction, indexed by the last part of their source template.

    A name can only match a template ending with its own last part (or with ``N``, any index),
    so each name is tried against those few rules only, in the rules' order.
    """
    compiled: list[tuple[re.Pattern[str], str, NameRule]] = []
    by_last: dict[str, list[int]] = {}
    wild: list[int] = []
    for rule in rules:
        src, dst = (rule.hf, rule.paddle) if to_paddle else (rule.paddle, rule.hf)
        if src.startswith("@") != params:
            continue
        src, dst = src.lstrip("@"), dst.lstrip("@")
        last = src.rpartition(".")[2]
        (wild if last == "N" else by_last.setdefault(last, [])).append(len(compiled))
        compiled.append((_pattern(src), dst, rule))
    return {k: tuple(v) for k, v in by_last.items()}, tuple(wild), tuple(compiled)


class Rewriter:
    """``rules`` indexed once, for many names (both directions, layer paths and parameter names)."""

    def __init__(self, rules: list[NameRule]) -> None:
        key = tuple(rules)
        self._indexes = {(to_paddle, params): _index(key, to_paddle, params) for to_paddle in (True, False) for params in (True, False)}

    def rewrite(self, name: str, to_paddle: bool, params: bool = False) -> list[tuple[str, NameRule]]:
        """Candidate names on the other side (paddlenlp when ``to_paddle``) for a layer path or,
        ``params=True``, a full parameter name."""
        return _apply(self._indexes[(to_paddle, params)], name)


def _rewrite(name: str, rules: list[NameRule], to_paddle: bool, params: bool) -> list[tuple[str, NameRule]]:
    return _apply(_index(tuple(rules), to_paddle, params), name)


def _apply(index: Any, name: str) -> list[tuple[str, NameRule]]:
    by_last, wild, compiled = index
    last = name.rpartition(".")[2]
    tried = by_last.get(last, ())
    if wild and last.isdigit():
        tried = tuple(sorted(tried + wild))
    out: list[tuple[str, NameRule]] = []
    for i in tried:
        pattern, dst, rule = compiled[i]
        m = pattern.match(name)
        if m:
            out.append((m.group(1) + _fill(dst, list(m.groups()[1:])), rule))
    return out


def hf_to_paddle_paths(name: str, rules: list[NameRule], *, params: bool = False) -> list[tuple[str, NameRule]]:
    """Candidate paddlenlp names for an HF layer path (or, ``params=True``, a full parameter name)."""
    return _rewrite(name, rules, True, params)


def paddle_to_hf_paths(name: str, rules: list[NameRule], *, params: bool = False) -> list[tuple[str, NameRule]]:
    """Candidate HF names for a paddlenlp layer path (or, ``params=True``, a full parameter name)."""
    return _rewrite(name, rules, False, params)
