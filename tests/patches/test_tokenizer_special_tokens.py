"""tokenizer_special_tokens: special and added tokens are never split, as in Hugging Face.

The oracle is Hugging Face's slow ``transformers.BertTokenizer`` built from the same vocabulary
file with the same options. paddlenlp 2.8.1 (installed in both environments) has the problem
when a tokenizer is built directly, so every test here runs the patch through the normal gate
(probe confirmed) and compares with HF or with the unpatched ``tokenize``.
"""

from __future__ import annotations

import inspect
import os
import pickle
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import paddlefix
from paddlefix.patches import tokenizer_special_tokens as tst
from tests.conftest import run_python

NAME = "tokenizer_special_tokens"
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIALS + [
    "hello", "world", "Hello", "World", "the", "The", "a", "b", "s", "k", "x", "un", "##aff", "##able",
    "mask", "ma", "##s", "##k", "cafe", "café", "Café", "naive", "naïve", "resume", "##s", "is", "##is",
    "中", "国", "人", "日", "本", "語", "!", ",", ".", "?", "[", "]", "#", "'", "(", ")", "-", "##lo", "hel",
    "new", "##word", "question",
]  # fmt: skip


def _write_vocab(directory: str) -> str:
    path = os.path.join(directory, "vocab.txt")
    seen, lines = set(), []
    for token in VOCAB:
        if token not in seen:
            seen.add(token)
            lines.append(token)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _write_vocab(str(tmp_path_factory.mktemp("vocab")))


@pytest.fixture(scope="module")
def tokenizers(vocab_file: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """(construction, lower) -> (paddlenlp tokenizer, HF slow tokenizer)."""
    import transformers
    from paddlenlp.transformers import BertTokenizer

    out = {}
    for lower in (True, False):
        hf = transformers.BertTokenizer(vocab_file, do_lower_case=lower)
        direct = BertTokenizer(vocab_file, do_lower_case=lower)
        saved = str(tmp_path_factory.mktemp(f"saved_{lower}"))
        direct.save_pretrained(saved)
        loaded = BertTokenizer.from_pretrained(saved)
        assert loaded.do_lower_case is lower
        out[("direct", lower)] = (direct, hf)
        out[("from_pretrained", lower)] = (loaded, hf)
    return out


def _apply() -> None:
    report = paddlefix.apply(NAME, strict=True)
    assert report[NAME].state == "applied", report[NAME].reason


def _original_tokenize():
    from paddlenlp.transformers.tokenizer_utils import PretrainedTokenizer

    return paddlefix.get_original(PretrainedTokenizer, "tokenize")


def _assert_same_as_hf(tok, hf, text: str, pair: str | None = None) -> None:
    assert tok.tokenize(text) == hf.tokenize(text), text
    ours, theirs = tok(text), hf(text)
    assert ours["input_ids"] == theirs["input_ids"], text
    assert ours["token_type_ids"] == theirs["token_type_ids"], text
    if pair is not None:
        ours, theirs = tok(text, pair), hf(text, pair)
        assert ours["input_ids"] == theirs["input_ids"], (text, pair)
        assert ours["token_type_ids"] == theirs["token_type_ids"], (text, pair)


# --- generated text -----------------------------------------------------------------------
_NEAR_MISSES = ["[mask]", "[Mask]", "[MASK", "MASK]", "[ MASK ]", "[[MASK]]", "[UNK", "[Sep]", "MASK", "CLS"]
_WORDS = [
    "hello", "world", "Hello", "WORLD", "the", "The", "unaffable", "un", "aff", "able", "mask", "ma",
    "café", "Café", "CAFÉ", "naïve", "résumé", "Ünïcödé", "señor", "cafe", "is", "x", "a", "b", "s", "k",
]  # fmt: skip
_SUBWORDS = ["##aff", "##able", "##s", "##k", "##lo"]
_CJK = ["中", "国", "人", "日本", "語", "中国人", "日本語"]
_ACCENTS = ["é", "É", "ü", "ñ", "Å", "ç", "ï", "ô"]
_SPACE = [" ", "  ", "\t", "\n", "\r\n", "\u3000", "\u00a0"]
_PUNCT = list("!,.?;:'\"()[]{}-#@$%&*/\\")
_ALPHABET = "abkmsxAMSKé中国!,.[]# \t\n"


def _pieces(specials: list[str]) -> st.SearchStrategy[str]:
    piece = st.one_of(
        st.sampled_from(specials),
        st.sampled_from(_NEAR_MISSES),
        st.sampled_from(_WORDS),
        st.sampled_from(_SUBWORDS),
        st.sampled_from(_CJK),
        st.sampled_from(_ACCENTS),
        st.sampled_from(_SPACE),
        st.sampled_from(_PUNCT),
        st.text(alphabet=_ALPHABET, max_size=4),
    )
    return st.lists(piece, max_size=12).map("".join)


_MIXED = _pieces(SPECIALS)


def _run(check, max_examples: int) -> None:
    settings(
        max_examples=max_examples,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )(check)()


# --- the probe ----------------------------------------------------------------------------
def test_probe_sees_the_problem_and_not_after_patch(paddlefix_clean: None) -> None:
    finding = tst.problem_present()
    assert finding.present, finding.detail
    assert "[MASK]" in finding.detail
    _apply()
    assert paddlefix.status()[NAME].reason.endswith(f"probe confirmed: {finding.detail}")
    assert not tst.problem_present().present


def test_problem_without_patch(paddlefix_clean: None, tokenizers: dict) -> None:
    """Without the patch a directly built tokenizer splits '[MASK]' (HF does not)."""
    tok, hf = tokenizers[("direct", True)]
    assert tok.tokenize("hello[MASK]world") != hf.tokenize("hello[MASK]world")
    assert tok.tokenize("[MASK][MASK]") != ["[MASK]", "[MASK]"]


# --- hand-written edge cases --------------------------------------------------------------
EDGE_CASES = [
    # text, expected uncased tokens (None: only compared with HF)
    ("hello[MASK]world", ["hello", "[MASK]", "world"]),
    ("[MASK][MASK]", ["[MASK]", "[MASK]"]),
    ("[MASK][MASK][MASK]", ["[MASK]", "[MASK]", "[MASK]"]),
    ("a[UNK]s", ["a", "[UNK]", "s"]),
    ("[MASK]", ["[MASK]"]),
    ("[MASK]hello", ["[MASK]", "hello"]),
    ("hello[MASK]", ["hello", "[MASK]"]),
    ("中[MASK]国", ["中", "[MASK]", "国"]),
    ("中国[SEP]人", ["中", "国", "[SEP]", "人"]),
    ("HELLO[MASK]WORLD", ["hello", "[MASK]", "world"]),
    ("[mask]", ["[", "mask", "]"]),
    ("[Mask]x", ["[", "mask", "]", "x"]),
    ("[[MASK]]", ["[", "[MASK]", "]"]),
    ("[MASK", ["[", "mask"]),
    ("MASK]", ["mask", "]"]),
    ("[CLS]hello[SEP]world[SEP]", ["[CLS]", "hello", "[SEP]", "world", "[SEP]"]),
    ("  [MASK]  ", ["[MASK]"]),
    ("\t[SEP]\n", ["[SEP]"]),
    ("hello.[MASK],", ["hello", ".", "[MASK]", ","]),
    ("café[MASK]naïve", ["cafe", "[MASK]", "naive"]),
    ("Café [PAD]", ["cafe", "[PAD]"]),
    ("the[PAD][UNK][CLS][SEP][MASK]the", ["the", "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the"]),
    ("", []),
    ("hello [MASK] world", ["hello", "[MASK]", "world"]),
    ("x[MASK]ΣΑΣ", None),
    ("[MASK]\u3000中\u00a0[UNK]", None),
    ("##aff[MASK]##able", None),
]


@pytest.mark.parametrize("construction", ["direct", "from_pretrained"])
@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_edge_cases_match_hf(paddlefix_clean: None, tokenizers: dict, construction: str, lower: bool) -> None:
    _apply()
    tok, hf = tokenizers[(construction, lower)]
    for text, expected in EDGE_CASES:
        _assert_same_as_hf(tok, hf, text, pair="b[SEP]a")
        if expected is not None and lower:
            assert tok.tokenize(text) == expected, text
    # case-sensitive matching of special tokens also when cased
    assert tok.tokenize("HELLO[mask]") == hf.tokenize("HELLO[mask]")
    assert "[MASK]" not in tok.tokenize("x[mask]x")


# --- oracle against Hugging Face on generated text ------------------------------------------
@pytest.mark.parametrize("construction", ["direct", "from_pretrained"])
@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_generated_text_matches_hf(paddlefix_clean: None, tokenizers: dict, construction: str, lower: bool) -> None:
    """1,000 generated strings per (construction, casing): tokenize() and __call__ (with pairs) equal HF."""
    _apply()
    tok, hf = tokenizers[(construction, lower)]
    original = _original_tokenize()
    seen: list[bool] = []  # per example: did unpatched paddlenlp differ from HF?

    @given(_MIXED, _MIXED)
    def check(text: str, pair: str) -> None:
        seen.append(original(tok, text) != hf.tokenize(text))
        _assert_same_as_hf(tok, hf, text, pair)

    _run(check, 1000)
    assert len(seen) >= 1000
    if construction == "direct":  # the generator does hit the problem, often
        assert sum(seen) >= 200, f"{sum(seen)} of {len(seen)}"
    else:  # from_pretrained was already right (FACTS: 0 of 616)
        assert sum(seen) == 0


def _with_added_tokens(tok, hf) -> None:
    for t in (tok, hf):
        assert t.add_special_tokens({"additional_special_tokens": ["[QUESTION]"]}) == 1
        # Only tokens new to the vocabulary: HF also makes a vocabulary word passed to add_tokens()
        # unsplittable, paddlenlp ignores it (a known difference, see README).
        assert t.add_tokens(["NewWord"]) == 1


@pytest.mark.parametrize("construction", ["direct", "from_pretrained"])
@pytest.mark.parametrize("lower", [True, False], ids=["uncased", "cased"])
def test_added_tokens_match_hf(
    paddlefix_clean: None, vocab_file: str, tmp_path, construction: str, lower: bool
) -> None:
    """After add_special_tokens / add_tokens (Splinter-style '[QUESTION]'), and after reloading them."""
    import transformers
    from paddlenlp.transformers import BertTokenizer

    _apply()
    tok = BertTokenizer(vocab_file, do_lower_case=lower)
    hf = transformers.BertTokenizer(vocab_file, do_lower_case=lower)
    _with_added_tokens(tok, hf)
    if construction == "from_pretrained":
        tok.save_pretrained(str(tmp_path))
        tok = BertTokenizer.from_pretrained(str(tmp_path))
    assert tok.tokenize("a[QUESTION]b[MASK]") == ["a", "[QUESTION]", "b", "[MASK]"]
    assert len(tok) == len(hf)
    mixed = _pieces(SPECIALS + ["[QUESTION]", "NewWord", "newword", "NEWWORD", "[question]"])

    @given(mixed, mixed)
    def check(text: str, pair: str) -> None:
        _assert_same_as_hf(tok, hf, text, pair)

    _run(check, 250)


# --- nothing changes where there is nothing to protect ----------------------------------------
def test_text_without_special_tokens_is_unchanged(paddlefix_clean: None, tokenizers: dict) -> None:
    _apply()
    original = _original_tokenize()
    no_special = _pieces(_NEAR_MISSES).filter(lambda s: not any(t in s for t in SPECIALS))
    pairs = [tokenizers[("direct", True)][0], tokenizers[("direct", False)][0]]

    @given(no_special)
    def check(text: str) -> None:
        for tok in pairs:
            assert tok.tokenize(text) == original(tok, text), text

    _run(check, 500)


def test_from_pretrained_output_is_unchanged(paddlefix_clean: None, tokenizers: dict) -> None:
    """from_pretrained tokenizers were already right: patched == unpatched on any text."""
    _apply()
    original = _original_tokenize()
    toks = [tokenizers[("from_pretrained", True)][0], tokenizers[("from_pretrained", False)][0]]

    @given(_MIXED)
    def check(text: str) -> None:
        for tok in toks:
            assert tok.tokenize(text) == original(tok, text), text

    _run(check, 300)


def _lower_like_paddlenlp(tokens: list[str], text: str) -> str:
    """paddlenlp 2.8.1's own lower-casing in PretrainedTokenizer.tokenize, verbatim."""
    import re

    pattern = r"(" + r"|".join(re.escape(t) for t in tokens) + r")|" + r"(.+?)"
    return re.sub(pattern, lambda m: m.groups()[0] or m.groups()[1].lower(), text)


def test_lowering_equals_paddlenlp_character_by_character() -> None:
    """The faster lower-casing gives paddlenlp's result on any Unicode text (final sigma included)."""
    import re

    tokens = SPECIALS + ["[QUESTION]", "ΣΑ"]
    compiled = re.compile("(" + "|".join(re.escape(t) for t in tokens) + ")")
    for text in ["ΑΣ ΣΑΣ", "xΣ[MASK]Σ", "ΣΑ[MASK]ΟΣ", "İstanbul ǅ ß ẞ ﬃ", "a\nB\r\nC", ""]:
        assert tst._lower_outside(compiled, text) == _lower_like_paddlenlp(tokens, text), text

    @given(st.lists(st.one_of(st.text(max_size=6), st.sampled_from(tokens + ["Σ", "σ", "ς"])), max_size=8).map("".join))
    def check(text: str) -> None:
        assert tst._lower_outside(compiled, text) == _lower_like_paddlenlp(tokens, text), text

    _run(check, 500)


# --- the WordPiece family and other covered classes ----------------------------------------
FAMILY = [
    "BertTokenizer", "ErnieTokenizer", "ElectraTokenizer", "DistilBertTokenizer", "ConvBertTokenizer",
    "TinyBertTokenizer", "PPMiniLMTokenizer", "MobileBertTokenizer", "SqueezeBertTokenizer",
    "LayoutLMTokenizer", "NeZhaTokenizer", "MegatronBertTokenizer", "RoFormerv2Tokenizer",
    "ErnieGramTokenizer", "SkepTokenizer", "FunnelTokenizer", "MPNetTokenizer", "ErnieCtmTokenizer",
]  # fmt: skip


@pytest.mark.parametrize("name", FAMILY)
def test_wordpiece_family_keeps_mask(paddlefix_clean: None, tmp_path, name: str) -> None:
    import paddlenlp.transformers as T

    path = os.path.join(str(tmp_path), "vocab.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(SPECIALS + ["<s>", "</s>", "<unk>", "<pad>", "<mask>", "a", "b"]) + "\n")
    tok = getattr(T, name)(path)
    text = f"a{tok.mask_token}{tok.mask_token}b"
    expected = ["a", tok.mask_token, tok.mask_token, "b"]
    assert tok.tokenize(text) != expected  # the problem, unpatched
    _apply()
    assert name in tst.covered_tokenizers()
    assert tok.tokenize(text) == expected
    assert tok(text)["input_ids"][1:-1] == tok.convert_tokens_to_ids(expected)


# --- patch mechanics ----------------------------------------------------------------------
def test_wrapper_keeps_signature_and_revert_restores(paddlefix_clean: None, tokenizers: dict) -> None:
    from paddlenlp.transformers.tokenizer_utils import PretrainedTokenizer

    original = PretrainedTokenizer.tokenize
    tok, _ = tokenizers[("direct", True)]
    broken = tok.tokenize("hello[MASK]world")
    _apply()
    assert PretrainedTokenizer.tokenize is not original
    assert paddlefix.is_patched(PretrainedTokenizer, "tokenize")
    assert inspect.signature(PretrainedTokenizer.tokenize) == inspect.signature(original)
    assert PretrainedTokenizer.tokenize.__doc__ == original.__doc__
    assert tok.tokenize("hello[MASK]world") == ["hello", "[MASK]", "world"]
    paddlefix.revert(NAME)
    assert PretrainedTokenizer.tokenize is original
    assert tok.tokenize("hello[MASK]world") == broken  # nothing was left on the instance
    assert tok.unique_no_split_tokens == []


def test_special_tokens_changed_later_are_followed(paddlefix_clean: None, vocab_file: str) -> None:
    from paddlenlp.transformers import BertTokenizer

    _apply()
    tok = BertTokenizer(vocab_file)
    assert tok.tokenize("a[MASK]b") == ["a", "[MASK]", "b"]
    tok.add_special_tokens({"mask_token": "<M>"})
    assert tok.tokenize("a<M>b[MASK]") == ["a", "<M>", "b", "[", "mask", "]"]


def test_cache_follows_in_place_edits_of_no_split_list(paddlefix_clean: None, vocab_file: str) -> None:
    """The cached trie is rebuilt when ``unique_no_split_tokens`` changes in place: paddlenlp's
    ``add_tokens`` of one token inserts into the list, and a same-length edit is followed too."""
    from paddlenlp.transformers import BertTokenizer

    _apply()
    tok = BertTokenizer(vocab_file)
    assert tok.tokenize("a[MASK]zzword") == ["a", "[MASK]", "[UNK]"]  # caches a trie for tok
    no_split = tok.unique_no_split_tokens
    assert tok.add_tokens(["zzword"]) == 1
    assert tok.unique_no_split_tokens is no_split  # edited in place
    assert tok.tokenize("a[MASK]zzword") == ["a", "[MASK]", "zzword"]
    no_split[no_split.index("zzword")] = "yyword"  # same list, same length, other content
    assert tok.tokenize("a[MASK]zzwordyyword") == ["a", "[MASK]", "[UNK]", "yyword"]


def test_threads_share_one_tokenizer(paddlefix_clean: None, vocab_file: str) -> None:
    """Eight threads tokenizing with one tokenizer while its trie is built and rebuilt agree with HF."""
    import threading

    import transformers
    from paddlenlp.transformers import BertTokenizer

    _apply()
    tok, hf = BertTokenizer(vocab_file), transformers.BertTokenizer(vocab_file)
    texts = [f"hello[MASK]world{i % 3 * '[SEP]'}中[UNK]Café[CLS]" for i in range(20)]
    want = [hf.tokenize(t) for t in texts]
    errors: list[str] = []
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        for i in range(20):
            if n == 0:  # one thread keeps changing the special tokens: every plan goes stale
                tok.add_special_tokens({"additional_special_tokens": [f"[Q{i}]"]})
            got = [tok.tokenize(t) for t in texts]
            if n != 0 and got != want:
                errors.append(f"thread {n}: {got[0]}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


CharTokenizer = None  # a module-level class (so that it pickles), created on first use


def _char_tokenizer_cls():
    """A minimal real paddlenlp tokenizer (one token per character) whose state pickles.

    paddlenlp's own Bert-family tokenizers do not pickle (their ``Vocab`` holds a lambda),
    patched or not.
    """
    global CharTokenizer
    if CharTokenizer is not None:
        return CharTokenizer
    from paddlenlp.transformers.tokenizer_utils import PretrainedTokenizer

    class _Char(PretrainedTokenizer):
        def __init__(self, vocab, unk_token="[UNK]", mask_token="[MASK]", sep_token="[SEP]", pad_token="[PAD]", **kwargs):  # noqa: E501
            self.vocab = dict(vocab)

        @property
        def vocab_size(self) -> int:
            return len(self.vocab)

        def get_vocab(self):
            return dict(self.vocab, **self.added_tokens_encoder)

        def _tokenize(self, text):
            return [c for c in text if not c.isspace()]

        def _convert_token_to_id(self, token):
            return self.vocab.get(token, self.vocab["[UNK]"])

    _Char.__name__ = _Char.__qualname__ = "CharTokenizer"
    _Char.__module__ = __name__
    CharTokenizer = _Char
    return _Char


def test_patched_tokenizer_pickles(paddlefix_clean: None) -> None:
    """Nothing of paddlefix is stored on a tokenizer: it pickles as before and keeps working."""
    cls = _char_tokenizer_cls()
    vocab = {t: i for i, t in enumerate(SPECIALS + list("abc"))}
    _apply()
    tok = cls(vocab)
    assert tok.tokenize("a[MASK]b") == ["a", "[MASK]", "b"]  # caches a plan for this instance
    from paddlenlp.transformers.tokenizer_utils import PretrainedTokenizer

    assert pickle.loads(pickle.dumps(PretrainedTokenizer.tokenize)) is PretrainedTokenizer.tokenize
    data = pickle.dumps(tok)
    assert b"paddlefix" not in data
    clone = pickle.loads(data)
    assert clone.tokenize("ab[MASK]c[SEP]") == ["a", "b", "[MASK]", "c", "[SEP]"]
    assert clone("a[MASK]")["input_ids"] == [vocab["a"], vocab["[MASK]"]]


def test_special_token_missing_from_vocabulary(paddlefix_clean: None, tmp_path) -> None:
    """The patch changes splitting, not the vocabulary: a special token missing from it keeps
    the [UNK] id in a directly built tokenizer until ``sanitize_special_tokens()`` (which
    ``from_pretrained`` calls, and HF does in ``__init__``) gives it one."""
    import transformers
    from paddlenlp.transformers import BertTokenizer

    path = os.path.join(str(tmp_path), "vocab.txt")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", "world"]) + "\n")
    _apply()
    tok, hf = BertTokenizer(path), transformers.BertTokenizer(path)
    assert tok.tokenize("hello[MASK]world") == hf.tokenize("hello[MASK]world") == ["hello", "[MASK]", "world"]
    assert tok("hello[MASK]world")["input_ids"] == [2, 4, 1, 5, 3]
    assert tok.sanitize_special_tokens() == 1
    assert tok("hello[MASK]world")["input_ids"] == hf("hello[MASK]world")["input_ids"] == [2, 4, 6, 5, 3]


class _TextDataset:
    def __init__(self, tokenizer, texts):
        self.tokenizer = tokenizer
        self.texts = texts

    def __len__(self):
        return len(self.texts)

    def __getitem__(self, i):
        ids = self.tokenizer(self.texts[i], max_length=16, padding="max_length", truncation=True)["input_ids"]
        return np.array(ids, dtype="int64"), np.array(os.getpid(), dtype="int64")


def test_dataloader_workers(paddlefix_clean: None, tokenizers: dict) -> None:
    """Patched tokenizers (one pickled and unpickled first) work in DataLoader(num_workers=2) workers."""
    import paddle

    _apply()
    tok, hf = tokenizers[("direct", True)]
    texts = [f"hello[MASK]world{i % 3 * '[SEP]'}中[UNK]" for i in range(8)]
    expected = [hf(t, max_length=16, padding="max_length", truncation=True)["input_ids"] for t in texts]
    vocab = {t: i for i, t in enumerate(SPECIALS + list("ab"))}
    char = pickle.loads(pickle.dumps(_char_tokenizer_cls()(vocab)))
    char_texts = ["a[MASK]b", "[MASK][MASK]a"] * 2
    char_expected = [[5, 4, 6] + [0] * 13, [4, 4, 5] + [0] * 13] * 2
    for dataset, want in ((_TextDataset(tok, texts), expected), (_TextDataset(char, char_texts), char_expected)):
        got, pids = [], set()
        for ids, pid in paddle.io.DataLoader(dataset, batch_size=2, num_workers=2, shuffle=False):
            got.extend(ids.numpy().tolist())
            pids.update(np.asarray(pid.numpy()).reshape(-1).tolist())
        assert got == want
        assert os.getpid() not in pids and len(pids) == 2


# --- deferred application in a fresh process --------------------------------------------------
def test_applies_when_paddlenlp_is_imported_later() -> None:
    code = textwrap.dedent(
        """
        import os, sys, tempfile
        import paddlefix
        report = paddlefix.apply("tokenizer_special_tokens")
        assert report["tokenizer_special_tokens"].state == "pending", report
        assert "paddlenlp" not in sys.modules
        from paddlenlp.transformers import BertTokenizer
        state = paddlefix.status()["tokenizer_special_tokens"]
        assert state.state == "applied", state
        d = tempfile.mkdtemp()
        path = os.path.join(d, "vocab.txt")
        open(path, "w").write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"]))
        print(BertTokenizer(path).tokenize("hello[MASK]world"))
        """
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "['hello', '[MASK]', 'world']"
