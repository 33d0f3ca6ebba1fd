"""attention_mask: BertModel and family accept every Hugging Face mask form; masked positions never leak.

What: paddlenlp's BERT-family encoders (``BertModel`` and the models that copied its mask
code, see :data:`COVERED`) turn a 2D ``[batch, seq]`` keep-mask into ``(1 - m) * -1e4``
and hand every other mask straight to ``paddle.nn.MultiHeadAttention``, which adds float
masks to the scores and maps int/bool masks to ``(m - 1) * 1e9``. Measured on paddlenlp
2.8.1 against Hugging Face ``BertModel`` with identical weights:

- 3D ``[batch, seq, seq]`` keep-masks (Hugging Face accepts them) fail with
  ``Broadcast dimension mismatch``, or, when batch equals the number of heads, are
  silently broadcast over the heads axis (1.8e-2 off);
- 4D float 0/1 keep-masks are added to the scores as if additive (3.8e-2 off);
- ``-1e4`` is not large enough: with large attention logits the content of padded
  tokens changes real-token outputs (7.7e-2);
- a wrong shape fails deep inside the attention with a broadcast error.

Fix: each covered model's ``forward`` normalises ``attention_mask`` first, on the device,
into the additive 4D mask the encoder passes through untouched:

- 2D ``[batch, key]`` and 3D ``[batch, seq, key]`` masks of any int/bool/float dtype and
  4D int/bool masks are keep-masks (1 = attend, 0 = masked), Hugging Face semantics:
  ``(1 - m) * mask_value``;
- 4D float masks are additive (added to the scores as given, cast to the model dtype),
  except a 4D float mask whose values are all 0 or 1 with at least one 1: that is read as
  a keep-mask, with a one-time :class:`~paddlefix.PaddlefixWarning` (an all-zero float
  mask stays additive, i.e. "mask nothing");
- ``mask_value`` is the minimum of the compute dtype (``float32``: -3.4e38; under
  ``paddle.amp`` the AMP dtype), and half of it for float16 (-32752), so that adding a
  negative logit cannot overflow to ``-inf`` and turn a fully masked row into NaN;
- any other shape, or one that cannot broadcast to ``[batch, heads, seq, key]`` (``key``
  = past length + seq), raises ``ValueError`` naming ``attention_mask``.

``attention_mask=None`` keeps paddlenlp's default (mask derived from ``pad_token_id``);
Hugging Face treats ``None`` as "attend everywhere". Masks are normalised on their device
without a host sync, except 4D float masks: their 0/1 test reads back two flags (one sync).
Static graphs (``paddle.jit.to_static``) are passed through unchanged.
"""

from __future__ import annotations

import functools
import threading
import warnings
from typing import Any, Callable, Sequence

from .._errors import PaddlefixWarning
from ..registry import Finding, Patch, Patcher
from ._util import signature


__all__ = ["SPEC", "COVERED", "normalize_attention_mask"]

#: (module, class) of every encoder whose ``forward`` is wrapped. Each one builds its
#: default mask from ``pad_token_id`` and passes a 4D float mask unchanged to attention
#: that adds it to the scores, as ``BertModel`` does.
COVERED: tuple[tuple[str, str], ...] = (
    ("paddlenlp.transformers.bert.modeling", "BertModel"),
    ("paddlenlp.transformers.ernie.modeling", "ErnieModel"),
    ("paddlenlp.transformers.roberta.modeling", "RobertaModel"),
    ("paddlenlp.transformers.electra.modeling", "ElectraModel"),
    ("paddlenlp.transformers.tinybert.modeling", "TinyBertModel"),
    ("paddlenlp.transformers.ernie_gram.modeling", "ErnieGramModel"),
    ("paddlenlp.transformers.ppminilm.modeling", "PPMiniLMModel"),
    ("paddlenlp.transformers.skep.modeling", "SkepModel"),
)

_MODULE = "paddlenlp.transformers"

_ACCEPTED = (
    "[batch, key] or [batch, seq, key] keep-masks (1 = attend, 0 = masked; any int/bool/float dtype), "
    "[batch|1, heads|1, seq|1, key] int/bool keep-masks or float additive masks "
    "(key = past length + seq; a dimension of 1 broadcasts)"
)

_warned_float01 = False
_warn_lock = threading.Lock()


def _mask_value(dtype: Any) -> float:
    """The value given to masked positions: no logit can overcome it, adding one can't overflow."""
    import paddle

    if dtype == paddle.float16:
        return -65504.0 / 2
    if dtype == paddle.bfloat16:
        return -3.3895313892515355e38
    if dtype == paddle.float64:
        return -1.7976931348623157e308
    return -3.4028234663852886e38


def _compute_dtype(dtype: Any) -> Any:
    """The dtype the attention scores are computed in: the AMP dtype when auto_cast is on."""
    import paddle

    try:
        from paddle.base import framework

        tracer = framework._dygraph_tracer()
        if tracer is not None and str(tracer._amp_level) != "AmpLevel.O0":
            amp = str(tracer._amp_dtype)
            if amp == "float16":
                return paddle.float16
            if amp == "bfloat16":
                return paddle.bfloat16
    except Exception:  # no tracer / older internals: the model dtype is the answer
        pass
    return dtype


def _is_float(dtype: Any) -> bool:
    import paddle

    return dtype in (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)


def _is_keep01(mask: Any) -> bool:
    """True if every value is 0 or 1 and at least one is 1: one read-back from the device.

    Comparisons only, so it also works for float16/bfloat16 masks on CPU, where Paddle has no
    ``min``/``max`` kernels for half types.
    """
    import paddle

    only01 = paddle.logical_or(mask == 0, mask == 1).all()
    any1 = (mask == 1).any()
    flags = paddle.stack([only01, any1]).numpy()
    return bool(flags[0]) and bool(flags[1])


_LIBRARIES = frozenset({"paddle", "paddlenlp", "paddlefix"})


def _caller_level() -> int:
    """``stacklevel`` (for a warning issued by the function calling this) of the first frame
    outside paddle, paddlenlp and paddlefix: the user's model call, however deep the head."""
    import sys

    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _LIBRARIES:
        frame, level = frame.f_back, level + 1
    return level


def _bad_shape(shape: Sequence[int], target: Sequence[object]) -> ValueError:
    return ValueError(
        f"attention_mask: got shape {shape}, which cannot broadcast to "
        f"[batch, heads, seq, key] = {target}; accepted shapes: {_ACCEPTED}"
    )


def normalize_attention_mask(
    mask: Any, *, batch: int, heads: int | None, seq: int, key: int, dtype: Any
) -> Any:
    """Turn any accepted ``attention_mask`` into an additive 4D mask of ``dtype``.

    ``batch``, ``heads`` (``None`` if unknown), ``seq`` (query length) and ``key`` (past
    length + seq) describe the attention the mask is for. Keep-masks become
    ``(1 - m) * v`` with ``v`` the masking value of the compute dtype; 4D float masks
    are additive unless all their values are 0 or 1 (with at least one 1). Raises
    ``ValueError`` for a shape that cannot broadcast to ``[batch, heads, seq, key]``.
    """
    global _warned_float01
    import paddle

    shape = [int(d) for d in mask.shape]
    ndim = len(shape)
    target = [batch, heads if heads is not None else "heads", seq, key]
    if ndim == 2:
        full = [shape[0], 1, 1, shape[1]]
    elif ndim == 3:
        full = [shape[0], 1, shape[1], shape[2]]
    elif ndim == 4:
        full = shape
    else:
        raise _bad_shape(shape, target)
    for got, want in zip(full, [batch, heads, seq, key]):
        if got != 1 and want is not None and got != want:
            raise _bad_shape(shape, target)

    if ndim == 2:
        mask = mask.unsqueeze([1, 2])
    elif ndim == 3:
        mask = mask.unsqueeze(1)
    elif _is_float(mask.dtype):
        if not _is_keep01(mask):
            return mask if mask.dtype == dtype else mask.astype(dtype)
        with _warn_lock:  # once, also when threads race here
            first, _warned_float01 = not _warned_float01, True
        if first:
            warnings.warn(
                "attention_mask: a 4D float mask whose values are all 0 or 1 is read as a keep-mask "
                "(1 = attend, 0 = masked), as Hugging Face reads 2D/3D masks, not added to the scores. "
                "Pass a bool/int mask to say so explicitly, or an additive mask (0 and large negative "
                "values) for additive semantics. (Shown once.)",
                PaddlefixWarning,
                stacklevel=_caller_level(),
            )
    value = _mask_value(_compute_dtype(dtype))
    if dtype in (paddle.float32, paddle.float64):
        return (1.0 - mask.astype(dtype)) * value
    # half types: compute in float32 (CPU kernels lack half arithmetic), the values are exact
    return ((1.0 - mask.astype("float32")) * value).astype(dtype)


class _Signature:
    """Where a forward takes the arguments the normaliser needs (positional index or keyword)."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        params = list(signature(fn).parameters.values())[1:]  # drop self
        names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        self.index = {name: i for i, name in enumerate(names)}

    def get(self, name: str, args: tuple, kwargs: dict) -> Any:
        i = self.index.get(name)
        if i is not None and i < len(args):
            return args[i]
        return kwargs.get(name)


def _model_dtype(model: Any) -> Any:
    import paddle

    emb = getattr(getattr(model, "embeddings", None), "word_embeddings", None)
    weight = getattr(emb, "weight", None)
    if weight is not None and _is_float(weight.dtype):
        return weight.dtype
    for p in model.parameters():
        if _is_float(p.dtype):
            return p.dtype
    return paddle.get_default_dtype()


def _num_heads(model: Any) -> int | None:
    config = getattr(model, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    if isinstance(heads, int):
        return heads
    try:
        return int(model.encoder.layers[0].self_attn.num_heads)
    except Exception:
        return None


def _wrap_forward(original: Callable[..., Any]) -> Callable[..., Any]:
    sig = _Signature(original)
    mask_index = sig.index.get("attention_mask")

    @functools.wraps(original)
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        import paddle

        mask = sig.get("attention_mask", args, kwargs)
        if mask is None or not isinstance(mask, paddle.Tensor) or not paddle.in_dynamic_mode():
            return original(self, *args, **kwargs)
        ids = sig.get("input_ids", args, kwargs)
        if ids is None:
            ids = sig.get("inputs_embeds", args, kwargs)
        if ids is None or len(ids.shape) < 2:
            return original(self, *args, **kwargs)
        batch, seq = int(ids.shape[0]), int(ids.shape[1])
        past = sig.get("past_key_values", args, kwargs)
        past_len = int(past[0][0].shape[2]) if past is not None else 0
        new = normalize_attention_mask(
            mask, batch=batch, heads=_num_heads(self), seq=seq, key=past_len + seq, dtype=_model_dtype(self)
        )
        if mask_index is not None and mask_index < len(args):
            args = args[:mask_index] + (new,) + args[mask_index + 1 :]
        else:
            kwargs["attention_mask"] = new
        return original(self, *args, **kwargs)

    # paddlenlp's InitTrackerMeta.__setattr__ re-wraps a class's new ``forward`` when
    # ``inspect.getfullargspec`` (which ignores ``__wrapped__`` but honours
    # ``__signature__``) lacks the original's arguments; the explicit signature avoids it.
    forward.__signature__ = signature(original)  # type: ignore[attr-defined]
    return forward


def _covered_classes() -> list[type]:
    import importlib

    out = []
    for modname, clsname in COVERED:
        try:
            module = importlib.import_module(modname)
        except ImportError:
            continue
        cls = getattr(module, clsname, None)
        if isinstance(cls, type) and "forward" in vars(cls):
            if "attention_mask" in signature(vars(cls)["forward"]).parameters:
                out.append(cls)
    return out


def problem_present() -> Finding:
    """A tiny BertModel with a 3D keep-mask (batch == heads): error or wrong output?"""
    import paddle
    from paddlenlp.transformers.bert.modeling import BertConfig, BertModel

    state = paddle.get_rng_state()
    try:
        config = BertConfig(
            vocab_size=8,
            hidden_size=4,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=4,
            max_position_embeddings=4,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        model = BertModel(config)
        model.eval()
        ids = paddle.to_tensor([[1, 2, 3], [4, 5, 6]], dtype="int64")
        keep = paddle.to_tensor(
            [[[1, 1, 0], [1, 1, 0], [1, 1, 0]], [[1, 0, 0], [1, 0, 0], [1, 0, 0]]], dtype="int64"
        )
        additive = (1.0 - keep.astype("float32").unsqueeze(1)) * -1e9
        with paddle.no_grad():
            expected = model(ids, attention_mask=additive)[0]
            try:
                got = model(ids, attention_mask=keep)[0]
            except Exception as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
                return Finding(True, f"3D mask [2, 3, 3] raises {type(exc).__name__}: {first[:120]}")
            diff = float((got - expected).abs().max())
    finally:
        paddle.set_rng_state(state)
    if diff > 1e-5:
        return Finding(True, f"3D mask [2, 3, 3] broadcast over heads: outputs off by {diff:.1e}")
    return Finding(False, "3D mask [2, 3, 3] gives the expected output")


def apply(patcher: Patcher) -> None:
    """Wrap the ``forward`` of every covered encoder found (see :data:`COVERED`)."""
    classes = _covered_classes()
    if not classes:
        raise RuntimeError("none of the covered paddlenlp encoders was found")
    for cls in classes:
        original = vars(cls)["forward"]
        patcher.replace(cls, "forward", _wrap_forward(original))

    def reset() -> None:
        global _warned_float01
        _warned_float01 = False

    patcher.on_revert(reset, "reset the one-time 4D float 0/1 mask warning")


SPEC = Patch(
    name="attention_mask",
    summary="BertModel (and family) accept every Hugging Face attention_mask form; masked positions never leak",
    requires={"paddlenlp": "<3"},
    module=_MODULE,
    probe=problem_present,
    apply=apply,
    imports=tuple(m for m, _ in COVERED),
    links=("PaddleNLP#1226",),
)
