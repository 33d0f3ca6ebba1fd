"""tokenizer_special_tokens: cost of never splitting special tokens.

Rows (1,000 mixed lines: words, sub-words, special tokens, CJK, accents, punctuation):
- patched / unpatched ``tokenize`` on a ``from_pretrained`` BertTokenizer (same instance,
  the unpatched side calls the saved original), goal <= 1.05;
- patched paddlenlp / Hugging Face slow ``BertTokenizer`` (same vocabulary), goal <= 1.0;
- the same two for ``__call__`` on the batch, and patched-direct / HF, for information.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile

import paddlefix  # noqa: F401  (before paddle: zlib first)
from _common import Row, compare

NAME = "tokenizer_special_tokens"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _vocab(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(3000)})
    pieces = sorted({"##" + "".join(rng.choice(letters) for _ in range(rng.randint(1, 4))) for _ in range(1500)})
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + 500)]
    punct = list("!,.?;:'\"()[]-#")
    return SPECIALS + words + pieces + cjk + punct + ["café", "naïve", "résumé"]


def _lines(rng: random.Random, vocab: list[str], n: int = 1000) -> list[str]:
    words = [w for w in vocab if w.isalpha() and w.isascii()]
    cjk = [w for w in vocab if "\u4e00" <= w[0] <= "\u9fff"]
    extra = ["Café", "NAÏVE", "résumé", "Hello", "WORLD", "ünïcödé"]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(8, 30)):
            r = rng.random()
            if r < 0.55:
                w = rng.choice(words)
                parts.append(w.capitalize() if rng.random() < 0.2 else w)
            elif r < 0.65:
                parts.append(rng.choice(SPECIALS))
            elif r < 0.8:
                parts.append("".join(rng.choice(cjk) for _ in range(rng.randint(1, 4))))
            elif r < 0.9:
                parts.append(rng.choice(extra))
            else:
                parts.append(rng.choice("!,.?;:'\"()-"))
        out.append("".join(p + (" " if rng.random() < 0.7 else "") for p in parts))
    return out


def rows() -> list[Row]:
    import transformers
    from paddlenlp.transformers import BertTokenizer
    from paddlenlp.transformers.tokenizer_utils import PretrainedTokenizer

    was_applied = paddlefix.status()[NAME].state == "applied"
    report = paddlefix.apply(NAME)
    if report[NAME].state != "applied":
        return [Row(f"{NAME}: not applied ({report[NAME].reason})", float("nan"), None)]
    rng = random.Random(0)
    vocab = _vocab(rng)
    lines = _lines(rng, vocab)
    tmp = tempfile.mkdtemp(prefix="paddlefix-bench-")
    try:
        path = os.path.join(tmp, "vocab.txt")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write("\n".join(vocab) + "\n")
        direct = BertTokenizer(path)
        direct.save_pretrained(os.path.join(tmp, "saved"))
        loaded = BertTokenizer.from_pretrained(os.path.join(tmp, "saved"))
        hf = transformers.BertTokenizer(path)
        original = paddlefix.get_original(PretrainedTokenizer, "tokenize")
        # same output (this also warms every path up before timing)
        assert [loaded.tokenize(x) for x in lines] == [hf.tokenize(x) for x in lines]
        assert [direct.tokenize(x) for x in lines] == [original(loaded, x) for x in lines]

        patched_s, unpatched_s = compare(
            lambda: [loaded.tokenize(x) for x in lines], lambda: [original(loaded, x) for x in lines], 1, 7
        )
        ours_s, hf_s = compare(lambda: [loaded.tokenize(x) for x in lines], lambda: [hf.tokenize(x) for x in lines], 1, 7)
        direct_s, hf2_s = compare(lambda: [direct.tokenize(x) for x in lines], lambda: [hf.tokenize(x) for x in lines], 1, 7)
        call_s, hf_call_s = compare(lambda: loaded(lines), lambda: hf(lines), 1, 5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not was_applied:
            paddlefix.revert(NAME)
    ms = lambda s: f"{s * 1e3:.0f} ms"  # noqa: E731
    return [
        Row(
            f"{NAME}: tokenize 1,000 lines, patched / unpatched (from_pretrained)",
            patched_s / unpatched_s,
            1.05,
            f"{ms(patched_s)} vs {ms(unpatched_s)}",
        ),
        Row(
            f"{NAME}: tokenize 1,000 lines, patched paddlenlp / HF slow",
            ours_s / hf_s,
            1.0,
            f"{ms(ours_s)} vs {ms(hf_s)}",
        ),
        Row(
            f"{NAME}: tokenize 1,000 lines, patched direct-built / HF slow",
            direct_s / hf2_s,
            None,
            f"{ms(direct_s)} vs {ms(hf2_s)}",
        ),
        Row(
            f"{NAME}: __call__ on 1,000 lines, patched paddlenlp / HF slow",
            call_s / hf_call_s,
            None,
            f"{ms(call_s)} vs {ms(hf_call_s)}",
        ),
    ]
