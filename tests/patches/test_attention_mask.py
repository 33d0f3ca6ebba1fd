"""attention_mask: every Hugging Face mask form on BertModel (and family), checked against HF BertModel.

Oracle: a tiny paddlenlp BertModel with random weights, copied into Hugging Face
``BertModel`` (torch, ``attn_implementation="eager"``). 2D/3D masks go through HF's own
``BertModel`` forward; 4D masks (which HF's eager BertModel does not take) go through HF's
encoder with the extended mask HF would build: ``(1 - m) * finfo.min`` for keep-masks, the
mask itself for additive float masks. Batch equals the number of heads (2) throughout, the
case where stock paddlenlp silently broadcasts a 3D mask over the heads.
"""

from __future__ import annotations

import inspect
import pickle
import warnings

import numpy as np
import pytest

import paddlefix
from paddlefix import PaddlefixWarning, align

from ..conftest import run_python

paddle = pytest.importorskip("paddle")
T = pytest.importorskip("paddlenlp.transformers")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

B, S, H = 2, 6, 2  # batch == heads
LENS = [6, 3]
F32_MIN = float(np.finfo(np.float32).min)


# -- models ---------------------------------------------------------------------------
def _paddle_bert(seed: int = 0, layers: int = 2) -> "T.BertModel":
    paddle.seed(seed)
    config = T.BertConfig(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=layers,
        num_attention_heads=H,
        intermediate_size=32,
        max_position_embeddings=16,
        type_vocab_size=2,
        initializer_range=0.2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    model = T.BertModel(config)
    model.eval()
    return model


def _hf_copy(model: "T.BertModel") -> "transformers.BertModel":
    """An HF BertModel with the paddlenlp model's configuration and weights (``align.transfer``)."""
    c = model.config
    config = transformers.BertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_hidden_layers,
        num_attention_heads=c.num_attention_heads,
        intermediate_size=c.intermediate_size,
        max_position_embeddings=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12,
        hidden_act="gelu",
        attn_implementation="eager",
    )
    hf = transformers.BertModel(config, add_pooling_layer=True).eval()
    align.transfer(model, hf)  # strict: every HF weight set, by layer, transposes decided by type
    return hf


@pytest.fixture(scope="module")
def pair():
    model = _paddle_bert()
    return model, _hf_copy(model)


def _ids(seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, 32, (B, S))
    for i, n in enumerate(LENS):
        ids[i, n:] = 0
    return ids


# -- masks (numpy, keep-masks are 0/1) ---------------------------------------------------
def _pad_keep() -> np.ndarray:
    keep = np.zeros((B, S), np.int64)
    for i, n in enumerate(LENS):
        keep[i, :n] = 1
    return keep


def _keep3(seed: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.integers(0, 2, (B, S, S)) * _pad_keep()[:, None, :]
    m[:, np.arange(S), np.arange(S)] = 1  # every query keeps itself
    return m * _pad_keep()[:, None, :] + np.eye(S, dtype=np.int64)[None] * (1 - _pad_keep()[:, None, :])


def _keep4_heads(seed: int = 3) -> np.ndarray:
    return np.stack([_keep3(seed), _keep3(seed + 1)], axis=1)  # [B, H, S, S], per-head patterns


def _causal() -> np.ndarray:
    return np.tril(np.ones((S, S), np.int64))[None, None]  # [1, 1, S, S]


KEEP_FORMS = {
    "2d": lambda: _pad_keep(),
    "3d": lambda: _keep3(),
    "4d_b11s": lambda: _pad_keep()[:, None, None, :],
    "4d_b1ss": lambda: _keep3()[:, None],
    "4d_bhss": lambda: _keep4_heads(),
    "4d_11ss": lambda: _causal(),
}
KEEP_DTYPES = ("int64", "int32", "bool", "float32", "float64")


def _additive(seed: int = 4, shape: str = "4d_b1ss") -> np.ndarray:
    keep = KEEP_FORMS[shape]().astype(np.float64)
    rng = np.random.default_rng(seed)
    bias = rng.uniform(-2.0, 0.5, keep.shape)  # a real additive bias, not only 0 / -inf
    return np.where(keep > 0, bias, -1e9)


def _hf_out(hf, ids: np.ndarray, mask: np.ndarray, additive: bool) -> "torch.Tensor":
    tids = torch.tensor(ids)
    if mask.ndim in (2, 3) and not additive:
        tmask = torch.tensor(mask.astype(bool) if mask.dtype == bool else mask)
        return hf(tids, attention_mask=tmask).last_hidden_state
    ext = (mask if additive else (1.0 - mask.astype(np.float64)) * F32_MIN).astype(np.float32)
    emb = hf.embeddings(input_ids=tids)
    return hf.encoder(emb, attention_mask=torch.tensor(np.broadcast_to(ext, ext.shape).copy())).last_hidden_state


def _real_max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return max(float(np.abs(a[i, :n] - b[i, :n]).max()) for i, n in enumerate(LENS))


def _apply():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PaddlefixWarning)
        st = paddlefix.apply("attention_mask", force=("attention_mask",))["attention_mask"]
    assert st.state == "applied", st.reason


# -- oracle: every form x dtype ------------------------------------------------------------
@pytest.fixture(scope="module")
def huge():
    """Query/key weights x1e6: logits ~1e11, beyond any fixed masking constant (-1e4, -1e9)."""
    return _scaled_model(1e6)


@pytest.mark.parametrize("dtype", KEEP_DTYPES)
@pytest.mark.parametrize("form", list(KEEP_FORMS))
def test_keep_masks_match_hf_and_never_leak(paddlefix_clean, pair, huge, form, dtype):
    """Keep-masks (1 = attend) of every shape and dtype match HF on real tokens within 2e-5,
    and with huge attention logits the padded tokens' content never reaches real tokens.

    Without the patch: 3D masks raise or broadcast over the heads (batch == heads), 4D float
    masks are added as if additive, and the masking constants (-1e4 for 2D, -1e9 for 4D
    int/bool) are overcome by the huge logits (real-token outputs change by 0.1 to 0.7).
    """
    model, hf = pair
    _apply()
    ids = _ids()
    np_mask = KEEP_FORMS[form]().astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PaddlefixWarning)
        with paddle.no_grad():
            got = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(np_mask))[0].numpy()
        leak = _leak(huge, np_mask)
    with torch.no_grad():
        want = _hf_out(hf, ids, np_mask, additive=False).numpy()
    assert _real_max_diff(got, want) <= 2e-5
    assert leak <= 1e-6, f"padded tokens changed real-token outputs by {leak:.1e}"


@pytest.mark.parametrize("dtype", ("float32", "float64"))
@pytest.mark.parametrize("form", ["4d_b11s", "4d_b1ss", "4d_bhss", "4d_11ss"])
def test_4d_float_masks_additive_or_keep_match_hf(paddlefix_clean, pair, form, dtype):
    """4D float masks: values other than 0/1 are added to the scores (as HF's encoder does);
    0/1 values are a keep-mask. Stock paddlenlp adds the 0/1 mask too (wrong)."""
    model, hf = pair
    _apply()
    ids = _ids()
    additive = _additive(shape=form)
    keep = KEEP_FORMS[form]()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PaddlefixWarning)
        with paddle.no_grad():
            got_add = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(additive.astype(dtype)))[0]
            got_keep = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(keep.astype(dtype)))[0]
    with torch.no_grad():
        want_add = _hf_out(hf, ids, additive, additive=True).numpy()
        want_keep = _hf_out(hf, ids, keep, additive=False).numpy()
    assert _real_max_diff(got_add.numpy(), want_add) <= 2e-5
    assert _real_max_diff(got_keep.numpy(), want_keep) <= 2e-5


def test_batch_not_heads_3d(paddlefix_clean):
    """A 3D mask with batch 3 != heads 2 (stock: broadcast error) matches the same rows run with batch 2."""
    model = _paddle_bert()
    _apply()
    rng = np.random.default_rng(5)
    ids = rng.integers(3, 32, (3, S))
    keep = rng.integers(0, 2, (3, S, S))
    keep[:, np.arange(S), np.arange(S)] = 1
    with paddle.no_grad():
        out3 = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(keep))[0].numpy()
        out2 = model(paddle.to_tensor(ids[:2]), attention_mask=paddle.to_tensor(keep[:2]))[0].numpy()
        one = model(paddle.to_tensor(ids[2:]), attention_mask=paddle.to_tensor(keep[2:]))[0].numpy()
    np.testing.assert_allclose(out3[:2], out2, atol=1e-6)
    np.testing.assert_allclose(out3[2:], one, atol=1e-6)


# -- the 0/1 rule ------------------------------------------------------------------------
def test_float_4d_rule_and_one_time_warning(paddlefix_clean, pair):
    """A 4D float 0/1 mask is read as a keep-mask with one PaddlefixWarning (until revert);
    an all-zero 4D float mask stays additive."""
    model, _ = pair
    _apply()
    ids = paddle.to_tensor(_ids())
    mask = paddle.to_tensor(_pad_keep()[:, None, None, :].astype("float32"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with paddle.no_grad():
            a = model(ids, attention_mask=mask)[0].numpy()
            b = model(ids, attention_mask=mask)[0].numpy()
            c = model(ids, attention_mask=paddle.to_tensor(_pad_keep()))[0].numpy()
    ours = [w for w in caught if issubclass(w.category, PaddlefixWarning)]
    assert len(ours) == 1 and "keep-mask" in str(ours[0].message)
    assert ours[0].filename == __file__  # points at the model call, not into paddle
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, c, atol=1e-6)

    # all zeros is not a keep-mask (it would mask everything): additive, masks nothing, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", PaddlefixWarning)
        with paddle.no_grad():
            zero = model(ids, attention_mask=paddle.zeros([B, 1, 1, S], dtype="float32"))[0].numpy()
            ones = model(ids, attention_mask=paddle.ones([B, S], dtype="int64"))[0].numpy()
    np.testing.assert_allclose(zero, ones, atol=1e-6)


def test_warning_points_at_the_model_call_through_a_head(paddlefix_clean):
    """The one-time warning names the line that called the model, also through a ``...ForXxx``
    head (a fixed stacklevel would point into paddlenlp's head forward)."""
    config = _paddle_bert().config
    paddle.seed(0)
    head = T.BertForSequenceClassification(config)
    head.eval()
    _apply()
    mask = paddle.to_tensor(_pad_keep()[:, None, None, :].astype("float32"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with paddle.no_grad():
            logits = head(paddle.to_tensor(_ids()), attention_mask=mask)
    ours = [w for w in caught if issubclass(w.category, PaddlefixWarning)]
    assert [w.filename for w in ours] == [__file__], [(w.filename, w.lineno) for w in ours]
    assert logits.shape == [B, 2]


# -- large logits: padded content never leaks --------------------------------------------
def _scaled_model(scale: float):
    model = _paddle_bert(seed=7, layers=1)
    with paddle.no_grad():
        for layer in model.encoder.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
                proj.weight.set_value(proj.weight * scale)
    return model


def _leak(model, mask: np.ndarray) -> float:
    ids = _ids()
    other = ids.copy()
    rng = np.random.default_rng(9)
    for i, n in enumerate(LENS):
        other[i, n:] = rng.integers(3, 32, S - n)  # change only the padded tokens' content
    with paddle.no_grad():
        a = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask))[0].numpy()
        b = model(paddle.to_tensor(other), attention_mask=paddle.to_tensor(mask))[0].numpy()
    return _real_max_diff(a, b)


def test_large_logits_stock_leaks_patched_does_not(paddlefix_clean):
    """Query/key weights x1000: stock's -1e4 lets padded tokens change real tokens; patched not."""
    model = _scaled_model(1000.0)
    stock = _leak(model, _pad_keep())
    assert stock > 1e-3, f"setup: stock should leak, changed real tokens by {stock:.1e}"
    _apply()
    for mask in (_pad_keep(), _pad_keep().astype(bool), _keep3(), _pad_keep()[:, None, None, :].astype("int32")):
        assert _leak(model, mask) <= 1e-6


@pytest.mark.parametrize("dtype", ("float16", "bfloat16"))
def test_half_precision_masks(dtype, monkeypatch):
    """Half-precision keep-masks: masked positions get a finite value that no logit beats and
    that adding a negative logit cannot overflow; 4D half masks work on CPU too (Paddle has no
    half ``min``/``max`` kernels there) and follow the 0/1 rule."""
    from paddlefix.patches import attention_mask as am

    monkeypatch.setattr(am, "_warned_float01", False)  # restored after the test
    half = getattr(paddle, dtype)
    lowest = -32752.0 if dtype == "float16" else float(np.float32(-3.3895313892515355e38))
    keep = paddle.to_tensor(_pad_keep())
    ext = am.normalize_attention_mask(keep, batch=B, heads=H, seq=S, key=S, dtype=half)
    assert ext.dtype == half and ext.shape == [B, 1, 1, S]
    values = ext.astype("float32").numpy()
    assert (values[1, :, :, LENS[1] :] == lowest).all() and (values[1, :, :, : LENS[1]] == 0).all()
    assert (values[0] == 0).all()
    if dtype == "float16":
        scores = np.float16(-30000.0) + values.astype(np.float16)  # float16 arithmetic
        assert np.isfinite(scores).all()  # a full float16 minimum would overflow to -inf here

    keep4 = paddle.to_tensor(_pad_keep()[:, None, None, :].astype("float32")).astype(half)
    with pytest.warns(PaddlefixWarning, match="keep-mask") as caught:
        ext4 = am.normalize_attention_mask(keep4, batch=B, heads=H, seq=S, key=S, dtype=half)
    assert [w.filename for w in caught] == [__file__]  # the caller, not paddlefix or pytest
    np.testing.assert_array_equal(ext4.astype("float32").numpy(), values)
    additive = paddle.to_tensor(_additive(shape="4d_b11s").astype("float32")).astype(half)
    same = am.normalize_attention_mask(additive, batch=B, heads=H, seq=S, key=S, dtype=half)
    np.testing.assert_array_equal(same.astype("float32").numpy(), additive.astype("float32").numpy())


def test_fully_masked_query_rows_match_hf(paddlefix_clean, pair):
    """The usual 3D mask, ``m[:, :, None] * m[:, None, :]``, masks every key of a padded query:
    those rows stay finite and equal HF's (uniform attention), as do the real ones. Stock
    paddlenlp raises or broadcasts the 3D mask over the heads (batch == heads)."""
    model, hf = pair
    _apply()
    ids = _ids()
    keep = _pad_keep()
    outer = keep[:, :, None] * keep[:, None, :]
    assert (outer[1, LENS[1] :] == 0).all()  # fully masked rows
    with paddle.no_grad():
        got = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(outer))[0].numpy()
    with torch.no_grad():
        want = _hf_out(hf, ids, outer, additive=False).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=0)


# -- errors --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "shape",
    [[B], [B, S + 1], [B + 1, S], [B, S, S + 1], [B, S - 1, S], [B, 3, S, S], [B, 1, 1, S, 1], [3, S, S]],
)
def test_bad_shapes_raise_naming_attention_mask(paddlefix_clean, pair, shape):
    """A mask that can't broadcast to [batch, heads, seq, key] raises ValueError naming it."""
    model, _ = pair
    _apply()
    with pytest.raises(ValueError) as info:
        model(paddle.to_tensor(_ids()), attention_mask=paddle.ones(shape, dtype="int64"))
    text = str(info.value)
    assert text.startswith("attention_mask")
    assert str(list(shape)) in text
    assert "accepted shapes" in text and "[batch, key]" in text and "[batch, seq, key]" in text


# -- gradients -----------------------------------------------------------------------------
GRAD_FORMS = {
    "2d_int": lambda: (_pad_keep(), False),
    "3d_bool": lambda: (_keep3().astype(bool), False),
    "3d_float": lambda: (_keep3().astype("float32"), False),
    "4d_int_heads": lambda: (_keep4_heads().astype("int32"), False),
    "4d_bool": lambda: (_pad_keep()[:, None, None, :].astype(bool), False),
    "4d_float01": lambda: (_keep3()[:, None].astype("float32"), False),
    "4d_additive": lambda: (_additive().astype("float32"), True),
}


def test_gradients_flow_and_match_hf_for_every_form(paddlefix_clean):
    """Gradients reach the weights with every mask form, and equal HF's within 2e-5 (stock:
    the 3D and 4D float 0/1 forms raise or give other gradients)."""
    model = _paddle_bert(seed=11)
    hf = _hf_copy(model)
    _apply()
    ids = _ids()
    weight = np.random.default_rng(12).normal(size=(B, S, 16)).astype("float32")
    for i, n in enumerate(LENS):
        weight[i, n:] = 0.0  # loss on real tokens only
    pairs = [
        (model.encoder.layers[0].self_attn.q_proj.weight, hf.encoder.layer[0].attention.self.query.weight, True),
        (model.encoder.layers[1].self_attn.k_proj.weight, hf.encoder.layer[1].attention.self.key.weight, True),
        (model.embeddings.word_embeddings.weight, hf.embeddings.word_embeddings.weight, False),
    ]
    for form, make in GRAD_FORMS.items():
        mask, additive = make()
        model.clear_gradients()
        hf.zero_grad()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PaddlefixWarning)
            out = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask))[0]
        (out * paddle.to_tensor(weight)).sum().backward()
        tout = _hf_out(hf, ids, mask, additive=additive)
        (tout * torch.tensor(weight)).sum().backward()
        for ours, theirs, transpose in pairs:
            assert ours.grad is not None, form
            g = ours.grad.numpy()
            t = theirs.grad.numpy().T if transpose else theirs.grad.numpy()
            assert np.isfinite(g).all() and np.abs(g).max() > 0, form
            np.testing.assert_allclose(g, t, atol=2e-5, rtol=0, err_msg=form)


# -- the family ------------------------------------------------------------------------------
def _family_model(modname: str, clsname: str):
    import importlib

    cls = getattr(importlib.import_module(modname), clsname)
    kw = dict(
        vocab_size=32,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=H,
        intermediate_size=32,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
        initializer_range=0.2,
    )
    if clsname in ("ElectraModel", "ErnieGramModel"):
        kw["embedding_size"] = 16
    paddle.seed(3)
    model = cls(cls.config_class(**kw))
    model.eval()
    return model


def _family_cases():
    from paddlefix.patches.attention_mask import COVERED

    return [pytest.param(m, c, id=c) for m, c in COVERED]


@pytest.mark.parametrize("modname, clsname", _family_cases())
def test_family_masked_equals_truncated(paddlefix_clean, modname, clsname):
    """Each covered encoder: a padded row under a 3D / 4D-float-0/1 / 2D mask equals the row
    run alone without its padding (stock: the 3D and 4D float forms raise or differ)."""
    model = _family_model(modname, clsname)
    _apply()
    ids = _ids()
    keep = _pad_keep()

    def seq_out(out):
        return out[0] if isinstance(out, (tuple, list)) else out

    forms = {
        "2d": keep,
        "3d": np.repeat(keep[:, None, :], S, axis=1),
        "4d_float01": keep[:, None, None, :].astype("float32"),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PaddlefixWarning)
        with paddle.no_grad():
            alone = [seq_out(model(paddle.to_tensor(ids[i : i + 1, :n]))).numpy()[0] for i, n in enumerate(LENS)]
            for name, mask in forms.items():
                got = seq_out(model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(mask))).numpy()
                diff = max(float(np.abs(got[i, :n] - alone[i]).max()) for i, n in enumerate(LENS))
                assert diff <= 1e-5, f"{clsname} {name}: {diff:.1e}"


# -- integration -----------------------------------------------------------------------------
def test_kwargs_positional_and_outputs_preserved(paddlefix_clean, pair):
    """The wrapper keeps the signature (paddlenlp does not re-wrap it), positional masks and
    output options work, and None keeps paddlenlp's pad-derived default."""
    from paddlenlp.transformers.bert.modeling import BertModel

    model, _ = pair
    _apply()
    forward = vars(BertModel)["forward"]
    assert paddlefix.is_patched(BertModel, "forward")
    assert forward.__name__ == "forward" and "attention_mask" in inspect.signature(forward).parameters
    ids = paddle.to_tensor(_ids())
    mask = paddle.to_tensor(_keep3())
    with paddle.no_grad():
        by_kw = model(ids, attention_mask=mask)[0].numpy()
        by_pos = model(ids, None, None, mask)[0].numpy()
        out = model(ids, attention_mask=mask, output_hidden_states=True, return_dict=True)
        default = model(ids)[0].numpy()
        padded = model(ids, attention_mask=paddle.to_tensor(_pad_keep()))[0].numpy()
    np.testing.assert_array_equal(by_kw, by_pos)
    assert len(out.hidden_states) == 3

    # with past_key_values the key length is past + seq, as in HF; same result as stock there
    with paddle.no_grad():
        past = model(ids[:, :5], attention_mask=paddle.to_tensor(_pad_keep()[:, :5]), use_cache=True, return_dict=True)
        step = model(ids[:, 5:], attention_mask=paddle.to_tensor(_pad_keep()), past_key_values=past.past_key_values)
        stock = paddlefix.get_original(BertModel, "forward")(
            model, ids[:, 5:], attention_mask=paddle.to_tensor(_pad_keep()), past_key_values=past.past_key_values
        )
        np.testing.assert_allclose(step[0].numpy(), stock[0].numpy(), atol=1e-6)
        with pytest.raises(ValueError, match=r"attention_mask: got shape \[2, 5\].*\[2, 2, 1, 6\]"):
            model(ids[:, 5:], attention_mask=paddle.to_tensor(_pad_keep()[:, :5]), past_key_values=past.past_key_values)
    np.testing.assert_allclose(out.last_hidden_state.numpy(), by_kw, atol=1e-6)
    assert _real_max_diff(default, padded) <= 1e-5


def test_state_dict_and_pickle(paddlefix_clean, tmp_path):
    """Patched models save/load state dicts and pickle (where Paddle pickles layers at all:
    2.6 refuses ``EagerParamBase``, patched or not); the copies still normalise masks."""
    model = _paddle_bert(seed=21)
    try:
        pickle.dumps(model)
        pickles = True
    except TypeError:
        pickles = False
    _apply()
    path = str(tmp_path / "m.pdparams")
    paddle.save(model.state_dict(), path)
    other = _paddle_bert(seed=22)
    other.set_state_dict(paddle.load(path))
    copy = pickle.loads(pickle.dumps(model)) if pickles else model
    ids = paddle.to_tensor(_ids())
    mask = paddle.to_tensor(_keep3()[:, None].astype("float32"))  # 4D float 0/1: a keep-mask
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PaddlefixWarning)
        with paddle.no_grad():
            want = model(ids, attention_mask=paddle.to_tensor(_keep3()[:, None]))[0].numpy()
            a = model(ids, attention_mask=mask)[0].numpy()
            b = other(ids, attention_mask=mask)[0].numpy()
            c = copy(ids, attention_mask=mask)[0].numpy()
    np.testing.assert_allclose(a, want, atol=1e-6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_revert_restores_originals(paddlefix_clean):
    from paddlefix.patches.attention_mask import _covered_classes

    classes = _covered_classes()
    before = {cls: vars(cls)["forward"] for cls in classes}
    _apply()
    assert all(vars(cls)["forward"] is not before[cls] for cls in classes)
    paddlefix.revert("attention_mask")
    assert all(vars(cls)["forward"] is before[cls] for cls in classes)


def test_probe_sees_problem_and_has_no_side_effect(paddlefix_clean, pair):
    """On the installed paddlenlp the probe sees the 3D-mask problem (which the HF oracle
    confirms: stock output differs or raises), and it leaves the RNG state alone."""
    from paddlefix.patches.attention_mask import problem_present

    paddle.seed(123)
    expected = paddle.rand([4]).numpy()
    paddle.seed(123)
    finding = problem_present()
    after = paddle.rand([4]).numpy()
    assert finding.present, finding.detail
    assert "3D mask" in finding.detail
    np.testing.assert_array_equal(expected, after)

    model, hf = pair
    ids = _ids()
    with torch.no_grad():
        want = _hf_out(hf, ids, _keep3(), additive=False).numpy()
    with paddle.no_grad():
        try:
            got = model(paddle.to_tensor(ids), attention_mask=paddle.to_tensor(_keep3()))[0].numpy()
        except ValueError as exc:
            assert "attention_mask" not in str(exc)
        else:
            assert _real_max_diff(got, want) > 1e-4


def test_applied_on_import_in_fresh_process():
    """``paddlefix.apply()`` before paddlenlp is imported: applied by the import hook, by default."""
    code = """
import paddlefix
paddlefix.apply()
import paddle
import paddlenlp.transformers as T
st = paddlefix.status()["attention_mask"]
print(st.state, st.reason)
cfg = T.BertConfig(vocab_size=8, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=4, max_position_embeddings=8)
m = T.BertModel(cfg)
out = m(paddle.to_tensor([[1, 2, 3]] * 3), attention_mask=paddle.ones([3, 3, 3], dtype="bool"))[0]
print("shape", list(out.shape))
"""
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("applied"), proc.stdout + proc.stderr[-2000:]
    assert "shape [3, 3, 4]" in proc.stdout
    assert "is patched" not in proc.stderr
