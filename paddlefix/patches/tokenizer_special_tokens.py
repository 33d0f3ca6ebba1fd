"""tokenizer_special_tokens: paddlenlp tokenizers never split special or added tokens.

What: ``PretrainedTokenizer.tokenize`` only keeps whole the strings in the instance's
``unique_no_split_tokens`` (matched through ``tokens_trie``). ``from_pretrained`` fills them
(``sanitize_special_tokens``), but a tokenizer built directly, e.g. ``BertTokenizer(vocab_file)``,
starts with both empty, so a special token touching other text is cut into pieces:
``"hello[MASK]world"`` -> ``hello [ ma ##s ##k ] world``. Hugging Face builds its trie in
``__init__`` (since transformers 4.34) and never splits a special or added token.

How: ``PretrainedTokenizer.tokenize`` is replaced by a version that matches on the *effective*
no-split list, ``unique_no_split_tokens`` plus every special token the tokenizer has now
(``all_special_tokens``), exactly as the list reads after ``from_pretrained``. The rest of
the algorithm is paddlenlp's own (lower-casing around special tokens, whitespace stripping
next to them, ``_tokenize`` on the pieces in between). Nothing is stored on the tokenizer:
the trie and regular expression built for an instance are cached beside it (weakly) and
rebuilt when its special or added tokens or ``do_lower_case`` change, so tokenizers pickle
as before and ``revert()`` restores the original behaviour of every instance. Tokenizer classes that
override ``tokenize`` themselves are not affected.

Versions (paddlenlp, direct construction): 2.0.0-2.2.2 split every special token (no trie);
2.2.3-2.2.6 correct; 2.3.0-2.3.4 split them even between spaces; 2.3.5-2.8.1 split the ones
touching other text. ``from_pretrained`` is correct from 2.3.0. The probe decides.
"""

from __future__ import annotations

import functools
import os
import re
import threading
import weakref
from typing import Any, Callable, List

from ..registry import Finding, Patch, Patcher
from ._util import paddlenlp_subclasses

__all__ = ["SPEC", "problem_present", "apply", "covered_tokenizers"]

_TOKENIZER_UTILS = "paddlenlp.transformers.tokenizer_utils"
_BERT_TOKENIZER = "paddlenlp.transformers.bert.tokenizer"

_PROBE_VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[", "]", "mask", "a", "b")


def problem_present() -> Finding:
    """Build a BertTokenizer from a tiny vocabulary; does ``"a[MASK]b"`` keep ``[MASK]``?"""
    import shutil
    import tempfile

    from paddlenlp.transformers.bert.tokenizer import BertTokenizer

    tmp = tempfile.mkdtemp(prefix="paddlefix-probe-")
    try:
        path = os.path.join(tmp, "vocab.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(_PROBE_VOCAB) + "\n")
        tokenizer = BertTokenizer(path)
        tokens = tokenizer.tokenize("a[MASK]b")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if tokens == ["a", "[MASK]", "b"]:
        return Finding(False, "'a[MASK]b' keeps '[MASK]' whole in a directly built BertTokenizer")
    return Finding(True, f"'[MASK]' split when adjacent to text: 'a[MASK]b' -> {tokens}")


class _Plan:
    """What tokenize() needs for one state of a tokenizer's special / added tokens."""

    __slots__ = ("key", "trie", "no_split", "lower_re")

    def __init__(self, key: tuple, trie: Any, no_split: frozenset, lower_re: Any) -> None:
        self.key = key  # (unique_no_split_tokens, special tokens, do_lower_case), by content
        self.trie = trie
        self.no_split = no_split
        self.lower_re = lower_re


_plans: "weakref.WeakKeyDictionary[Any, _Plan]" = weakref.WeakKeyDictionary()
_plans_lock = threading.Lock()


def _lower_outside(pattern: Any, text: str) -> str:
    """Lower-case ``text`` except where ``pattern`` (special / added tokens) matches.

    Same result as paddlenlp's ``re.sub(r"(tokens)|(.+?)", ...)``, which lowers one character
    at a time: segments are lowered whole unless they hold a capital sigma, whose
    lower-case form depends on its neighbours.
    """
    parts = pattern.split(text)
    for i in range(0, len(parts), 2):  # even indexes: text between matches
        seg = parts[i]
        if seg:
            parts[i] = seg.lower() if "\u03a3" not in seg else "".join(c.lower() for c in seg)
    return "".join(parts)


def _make_tokenize(original: Callable[..., List[str]], trie_cls: Any, added_token_cls: Any) -> Callable[..., List[str]]:
    def plan_for(self: Any, specials: List[str]) -> _Plan:
        no_split_list = self.unique_no_split_tokens
        lower = bool(getattr(self, "do_lower_case", False))
        # By content, not by the list's identity: paddlenlp also edits the list in place
        # (add_tokens of one token). O(n) like the set() stock tokenize builds every call.
        key = (tuple(no_split_list), tuple(specials), lower)
        try:
            plan = _plans.get(self)
        except TypeError:  # unhashable subclass: no cache
            plan = None
        if plan is not None and plan.key == key:
            return plan
        present = set(no_split_list)
        missing = [t for t in specials if t not in present]
        # The list from_pretrained() would leave: the sorted union (paddlenlp keeps it sorted).
        effective = sorted(present.union(specials)) if missing else list(no_split_list)
        trie = trie_cls()
        special_set = set(specials)
        for token in effective:  # as PretrainedTokenizer._create_trie, without storing it
            trie.add(token.lower() if lower and token not in special_set else token)
        lower_re = None
        if lower:
            escaped = [re.escape(t) for t in effective + specials if t]
            # With nothing to protect, a pattern that never matches: every character is lowered.
            lower_re = re.compile("(" + "|".join(escaped) + ")" if escaped else "((?!))")
        plan = _Plan(key, trie, frozenset(effective), lower_re)
        try:
            with _plans_lock:
                _plans[self] = plan
        except TypeError:
            pass
        return plan

    @functools.wraps(original)
    def tokenize(self: Any, text: str, **kwargs: Any) -> List[str]:
        extended = self.all_special_tokens_extended
        specials = [str(t) for t in extended]
        plan = plan_for(self, specials)
        added = {str(t): t for t in extended if isinstance(t, added_token_cls)}

        text, kwargs = self.prepare_for_tokenization(text, **kwargs)

        if plan.lower_re is not None:
            text = _lower_outside(plan.lower_re, text)

        no_split = plan.no_split
        tokens = plan.trie.split(text)
        # ["This is something", "<special_token_1>", "  else"]
        for i, token in enumerate(tokens):
            if token in no_split:
                tok_extended = added.get(token, None)
                left = tokens[i - 1] if i > 0 else None
                right = tokens[i + 1] if i < len(tokens) - 1 else None
                if isinstance(tok_extended, added_token_cls):
                    if tok_extended.rstrip and right:
                        tokens[i + 1] = right.lstrip()
                    if tok_extended.lstrip and left:
                        tokens[i - 1] = left.rstrip()
                else:
                    if right:
                        tokens[i + 1] = right.lstrip()
                    if left:
                        tokens[i - 1] = left.rstrip()
        tokenized_text: List[str] = []
        for token in tokens:
            if not token:
                continue
            if token in no_split:
                tokenized_text.append(token)
            else:
                tokenized_text.extend(self._tokenize(token))
        return tokenized_text

    return tokenize


def apply(patcher: Patcher) -> None:
    """Replace ``PretrainedTokenizer.tokenize`` by the version that never splits special tokens."""
    import sys

    tu = sys.modules[_TOKENIZER_UTILS]
    base = tu.PretrainedTokenizer
    for needed in ("unique_no_split_tokens", "_tokenize", "prepare_for_tokenization", "all_special_tokens_extended"):
        if not hasattr(base, needed):
            raise RuntimeError(f"unsupported paddlenlp: PretrainedTokenizer has no {needed!r}")
    trie_cls = getattr(tu, "Trie", None)
    added_token_cls = getattr(tu, "AddedToken", None)
    if trie_cls is None or added_token_cls is None:
        raise RuntimeError("unsupported paddlenlp: tokenizer_utils has no Trie / AddedToken")
    original = patcher.original(base, "tokenize")
    patcher.replace(base, "tokenize", _make_tokenize(original, trie_cls, added_token_cls))

    def _drop_cache() -> None:
        with _plans_lock:
            _plans.clear()

    patcher.on_revert(_drop_cache, "drop cached tries")


def covered_tokenizers() -> list[str]:
    """Names of the loaded paddlenlp tokenizer classes that use the patched ``tokenize``.

    Imports nothing: classes of tokenizer modules not imported yet are not listed.
    """
    import sys

    tu = sys.modules.get(_TOKENIZER_UTILS)
    if tu is None:
        return []
    base = tu.PretrainedTokenizer
    return sorted({
        cls.__name__ for cls in paddlenlp_subclasses(base) if getattr(cls, "tokenize", None) is getattr(base, "tokenize")
    })


SPEC = Patch(
    name="tokenizer_special_tokens",
    summary="paddlenlp tokenizers never split special or added tokens, as Hugging Face does",
    requires={"paddlenlp": "<3"},
    module="paddlenlp.transformers",
    probe=problem_present,
    apply=apply,
    imports=(_TOKENIZER_UTILS, _BERT_TOKENIZER),
    links=("PaddleNLP#801", "PaddleNLP#1231"),
)
