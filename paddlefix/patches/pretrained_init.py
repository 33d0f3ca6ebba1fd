"""pretrained_init: ``from_pretrained(..., low_cpu_mem_usage=True)`` initialises as the default path does.

What: paddlenlp's ``PretrainedModel.from_pretrained`` with ``low_cpu_mem_usage=True`` builds
the model under ``no_init_weights()`` and ``paddle.LazyGuard()`` (``model_utils.py``: the
``init_contexts`` of ``from_pretrained``), then shares each checkpoint tensor into its
parameter (``_load_state_dict_into_meta_model``). ``no_init_weights`` turns the model's
``init_weights()`` (called from ``_post_init``) into a no-op, so the class's
``_init_weights`` hook never runs, and nothing else runs it afterwards. Measured on paddlenlp
2.8.1 with Paddle 2.6.2 and 3.3.1, loading ``BertForSequenceClassification`` from a saved
``BertModel``:

- the parameters missing from the checkpoint (the new classifier head) are lazy parameters
  that were never initialised: they hold no data (``numpy()`` is empty, its std ``nan``) and
  the first forward pass fails or computes garbage;
- every ``LayerNorm`` keeps Paddle's default epsilon 1e-5 instead of the config's
  ``layer_norm_eps`` (1e-12 for BERT), because paddlenlp sets ``_epsilon`` inside
  ``_init_weights``; the outputs differ from the default path's (and Hugging Face's).

Without the flag both are right: ``_init_weights`` runs at construction and the checkpoint
overwrites the loaded weights afterwards.

How: ``PretrainedModel._load_pretrained_model`` (the one place both paths load weights) is
wrapped. When it was called with ``low_cpu_mem_usage=True``, after the stock loading:

1. each parameter the checkpoint did not provide (never initialised, or named in
   ``missing_keys`` / ``mismatched_keys``) is initialised with its own construction
   initialiser (``EagerParamBase.initialize()``, what the default path's construction does);
2. the model's ``init_weights`` pass is run as the default path runs it (``_initialize_weights``
   over every layer, children first, nested pretrained models first, under the model dtype),
   with every *loaded* parameter temporarily replaced by a small stand-in
   (``[shape[0], 1, ...]``): the hook's own code sets the state it sets (``_epsilon``,
   ``bias = None``, ...) and initialises the missing parameters, while writes meant for
   loaded parameters land on the stand-ins and are dropped. Loaded parameters are put back
   untouched (bit-identical to the checkpoint), and no full-size tensor is drawn for them,
   so the flag still saves what it is meant to save.

Classes that override ``init_weights`` itself (Funnel, Blip, Deberta, DebertaV2, ChatGLM) run
their own initialisation at construction, with or without the flag; they are not changed.
Weight-quantised loading (``quantization_config``) is not changed either.

Versions: paddlenlp 2.6.0-2.8.1 have the problem (the flag exists there; older releases do
not import on any installable Paddle). The probe saves a tiny ``BertModel`` to a temporary
folder and loads a ``BertForSequenceClassification`` from it with the flag.

Upstream: the flag came with PaddleNLP#5270 ("Support Lazy init from pre-trained model"),
whose example disables ``init_weights`` by hand; Paddle#76204 is a neighbouring fix for
uninitialised weights in the same loading mode (``Embedding`` with ``padding_idx``).
Hugging Face runs ``_initialize_weights`` on the modules a fast load left without weights
(``set_initialized_submodules``); its layer norms get their epsilon at construction.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Callable, Iterable

from ..registry import Finding, Patch, Patcher
from ._util import paddlenlp_subclasses, signature

__all__ = ["SPEC", "problem_present", "apply", "covered_models", "complete_init"]

_MODEL_UTILS = "paddlenlp.transformers.model_utils"
_BERT = "paddlenlp.transformers.bert.modeling"


def _log() -> Any:
    import logging

    return logging.getLogger("paddlefix")


@contextlib.contextmanager
def _young_gc() -> Any:
    """Make the ``gc.collect()`` inside low-memory loading scan only new objects (probe only).

    paddlenlp calls ``gc.collect()`` after each checkpoint shard; with paddle and torch
    loaded a full collection takes ~150 ms, most of the probe. Objects that exist before
    the probe are frozen for its duration (``gc.freeze``) and unfrozen after, unless the
    program had frozen objects itself, in which case nothing is changed.
    """
    import gc

    mine = hasattr(gc, "freeze") and gc.get_freeze_count() == 0
    if mine:
        gc.freeze()
    try:
        yield
    finally:
        if mine:
            gc.unfreeze()


@contextlib.contextmanager
def _quiet_paddlenlp() -> Any:
    """paddlenlp's logger prints INFO / WARNING lines for every load: silence it (probe only)."""
    try:
        from paddlenlp.utils.log import logger
    except Exception:  # pragma: no cover - paddlenlp without its logger
        yield
        return
    std = getattr(logger, "logger", None)
    level = std.level if std is not None else None
    if std is not None:
        std.setLevel(50)
    try:
        yield
    finally:
        if std is not None and level is not None:
            std.setLevel(level)


def problem_present() -> Finding:
    """Save a tiny BertModel, load BertForSequenceClassification with ``low_cpu_mem_usage=True``."""
    import shutil
    import tempfile

    import paddle
    from paddlenlp.transformers import model_utils
    from paddlenlp.transformers.bert.modeling import BertConfig, BertForSequenceClassification, BertModel

    if "low_cpu_mem_usage" not in signature(model_utils.PretrainedModel._load_pretrained_model).parameters:
        return Finding(False, "this paddlenlp has no low_cpu_mem_usage loading")
    state = paddle.get_rng_state()
    tmp = tempfile.mkdtemp(prefix="paddlefix-probe-")
    try:
        config = BertConfig(
            vocab_size=8,
            hidden_size=4,
            num_hidden_layers=1,
            num_attention_heads=1,
            intermediate_size=4,
            max_position_embeddings=4,
            type_vocab_size=1,
        )
        with _quiet_paddlenlp(), _young_gc():
            BertModel(config).save_pretrained(tmp)
            model = BertForSequenceClassification.from_pretrained(tmp, low_cpu_mem_usage=True, num_labels=2)
        head = model.classifier.weight
        eps = {float(layer._epsilon) for layer in model.sublayers() if isinstance(layer, paddle.nn.LayerNorm)}
        problems = []
        if not head._is_initialized():
            problems.append("the new classifier weight is left uninitialised (no data)")
        elif not bool(paddle.isfinite(head).all()):
            problems.append("the new classifier weight holds non-finite values")
        if eps != {float(config.layer_norm_eps)}:
            shown = ", ".join(f"{e:g}" for e in sorted(eps))
            problems.append(f"LayerNorm epsilon {shown} instead of the config's {config.layer_norm_eps:g}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        paddle.set_rng_state(state)
    if problems:
        return Finding(True, "from_pretrained(low_cpu_mem_usage=True): " + "; ".join(problems))
    return Finding(
        False,
        "from_pretrained(low_cpu_mem_usage=True) initialises the new head and sets the config's LayerNorm epsilon",
    )


# -- the fix ---------------------------------------------------------------------------
def _own_params(layer: Any) -> Iterable[tuple[str, Any]]:
    return [(n, p) for n, p in layer._parameters.items() if p is not None]


def _stand_in(paddle: Any, param: Any) -> Any:
    """A small parameter of the same rank and dtype: ``[shape[0], 1, ...]`` (a scalar stays a scalar).

    The first axis is kept so that row writes (``weight[padding_idx] = 0``) still work.
    """
    shape = list(param.shape)
    small = [shape[0]] + [1] * (len(shape) - 1) if shape else []
    return paddle.create_parameter(
        small, param.dtype, default_initializer=paddle.nn.initializer.Constant(0.0)
    )


def _expected_key(key: str, prefix: str, remove_prefix: bool, add_prefix: bool) -> str:
    """A model state-dict key in the naming ``_load_pretrained_model`` uses for ``missing_keys``."""
    if remove_prefix and key.startswith(prefix + "."):
        return key[len(prefix) + 1 :]
    if add_prefix:
        return f"{prefix}.{key}"
    return key


def _not_loaded(model: Any, loaded_keys: Iterable[str], missing: Iterable[str], mismatched: Iterable[Any]) -> set[int]:
    """ids of the parameters the checkpoint did not provide."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    names = dict(model.named_parameters())
    loaded_keys = list(loaded_keys or ())
    remove_prefix = add_prefix = False
    if prefix:
        has_prefix = any(k.startswith(prefix) for k in loaded_keys)
        expects_prefix = any(k.startswith(prefix) for k in names)
        remove_prefix = not has_prefix and expects_prefix
        add_prefix = has_prefix and not expects_prefix
    wanted = set(missing or ())
    for item in mismatched or ():
        ckpt = item[0] if isinstance(item, (tuple, list)) else item
        wanted.add(ckpt)
    out = set()
    for name, param in names.items():
        if not param._is_initialized() or _expected_key(name, prefix, remove_prefix, add_prefix) in wanted:
            out.add(id(param))
    return out


def _init_pass_models(model: Any, base_init_weights: Any, pretrained_cls: Any) -> list[Any]:
    """The pretrained models inside ``model`` (itself included) whose ``init_weights`` is the
    base one, innermost first: the order in which the default path's ``_post_init`` runs them."""
    found: list[tuple[int, Any]] = []

    def walk(layer: Any, depth: int) -> None:
        if isinstance(layer, pretrained_cls) and type(layer).init_weights is base_init_weights:
            found.append((depth, layer))
        for child in layer.children():
            walk(child, depth + 1)

    walk(model, 0)
    found.sort(key=lambda item: -item[0])  # stable: siblings keep their order
    return [layer for _, layer in found]


def complete_init(model: Any, not_loaded: set[int], dtype: Any = None) -> dict[str, int]:
    """Initialise ``model`` as the default path does, leaving every loaded parameter untouched.

    ``not_loaded`` holds the ids of the parameters the checkpoint did not provide. Returns
    counts (``initialised``: parameters given values, ``protected``: loaded parameters kept,
    ``layers``: layers the ``_init_weights`` hook ran on).
    """
    import paddle
    from paddlenlp.transformers import model_utils

    base = model_utils.PretrainedModel
    params = list(model.named_parameters())
    initialised = 0
    for name, param in params:
        if id(param) in not_loaded and not param._is_initialized():
            if getattr(param, "_init_func", None) is None:
                raise RuntimeError(f"pretrained_init: parameter {name!r} is uninitialised and has no initialiser")
            param.initialize()
            initialised += 1

    # Swap every loaded parameter for a stand-in. Their values are dropped, so one stand-in
    # per (small shape, dtype) serves them all: creating a parameter costs ~0.5 ms.
    stand_ins: dict[tuple[Any, ...], Any] = {}
    protected: set[int] = set()
    swapped: list[tuple[Any, str, Any, Any]] = []  # (layer, name, real, stand-in)
    for layer in model.sublayers(include_self=True):
        for name, param in _own_params(layer):
            if id(param) in not_loaded:
                continue
            shape = list(param.shape)
            key = (shape[0] if shape else None, len(shape), str(param.dtype))
            if key not in stand_ins:
                stand_ins[key] = _stand_in(paddle, param)
            protected.add(id(param))
            layer._parameters[name] = stand_ins[key]
            swapped.append((layer, name, param, stand_ins[key]))
    ran = 0
    guard = model_utils.dtype_guard(dtype) if dtype else contextlib.nullcontext()
    try:
        with guard:
            for owner in _init_pass_models(model, base.init_weights, base):
                hook: Callable[[Any], None] = getattr(owner, "_initialize_weights", None) or owner._init_weights
                for layer in _post_order(owner):
                    if getattr(layer, "_is_initialized", False):
                        continue
                    try:
                        hook(layer)
                    except Exception as exc:
                        if _holds_missing(layer, not_loaded):
                            raise
                        # Only stand-ins were involved (e.g. a shape taken from the config does
                        # not fit a stand-in): nothing of the model's values was at stake.
                        _log().debug(
                            "pretrained_init: %s._init_weights(%s) on stand-ins raised %s: %s",
                            type(owner).__name__, type(layer).__name__, type(exc).__name__, exc,
                        )
                        layer._is_initialized = True
                    ran += 1
    finally:
        for layer, name, real, stand_in in swapped:
            if layer._parameters.get(name) is stand_in:
                layer._parameters[name] = real
            # else: the hook replaced or removed it (``layer.bias = None``), as it does on
            # the default path before loading: keep what it set.
    for name, param in model.named_parameters():
        if not param._is_initialized():
            raise RuntimeError(f"pretrained_init: parameter {name!r} is still uninitialised")
    return {"initialised": initialised, "protected": len(protected), "layers": ran}


def _post_order(layer: Any) -> list[Any]:
    """Layers in ``Layer.apply`` order: children first, then the layer itself."""
    out: list[Any] = []

    def walk(node: Any) -> None:
        for child in node.children():
            walk(child)
        out.append(node)

    walk(layer)
    return out


def _holds_missing(layer: Any, not_loaded: set[int]) -> bool:
    return any(id(p) in not_loaded for p in layer.parameters())


def _make_load(original: Any) -> Any:
    """Wrap the ``_load_pretrained_model`` classmethod ``original``."""
    func = original.__func__
    sig = signature(func)

    @functools.wraps(func)
    def _load_pretrained_model(cls: Any, *args: Any, **kwargs: Any) -> Any:
        result = func(cls, *args, **kwargs)
        try:
            bound = sig.bind(cls, *args, **kwargs)
        except TypeError:  # the original accepted it, so this cannot happen; be safe
            return result
        arguments = bound.arguments
        if not arguments.get("low_cpu_mem_usage"):
            return result
        config = arguments.get("config")
        quantization = getattr(config, "quantization_config", None)
        if quantization is not None and quantization.is_weight_quantize():
            return result
        model, missing, _unexpected, mismatched = result
        not_loaded = _not_loaded(model, arguments.get("loaded_keys") or (), missing, mismatched)
        counts = complete_init(model, not_loaded, arguments.get("dtype"))
        _log().debug(
            "pretrained_init: %s loaded with low_cpu_mem_usage=True: %d parameters initialised, "
            "%d loaded ones kept, _init_weights on %d layers",
            type(model).__name__, counts["initialised"], counts["protected"], counts["layers"],
        )
        return result

    return classmethod(_load_pretrained_model)


def apply(patcher: Patcher) -> None:
    """Wrap ``PretrainedModel._load_pretrained_model`` (see the module docstring)."""
    import sys

    mu = sys.modules[_MODEL_UTILS]
    base = mu.PretrainedModel
    original = patcher.original(base, "_load_pretrained_model")
    if not isinstance(original, classmethod):
        original = vars(base).get("_load_pretrained_model")
    if not isinstance(original, classmethod):
        raise RuntimeError("unsupported paddlenlp: PretrainedModel._load_pretrained_model is not a classmethod")
    for needed in ("_init_weights", "init_weights"):
        if not hasattr(base, needed):
            raise RuntimeError(f"unsupported paddlenlp: PretrainedModel has no {needed!r}")
    if not hasattr(mu, "dtype_guard"):
        raise RuntimeError("unsupported paddlenlp: model_utils has no dtype_guard")
    patcher.replace(base, "_load_pretrained_model", _make_load(original))


def covered_models() -> list[str]:
    """Names of the loaded paddlenlp model classes whose ``_init_weights`` the patch runs.

    Those are the ``PretrainedModel`` subclasses that define their own ``_init_weights``
    hook (directly or inherited from a family base) and keep the base ``init_weights``,
    which ``no_init_weights`` turns off. Imports nothing: classes of modules not imported
    yet are not listed.
    """
    import sys

    mu = sys.modules.get(_MODEL_UTILS)
    if mu is None:
        return []
    base = mu.PretrainedModel
    return sorted({
        cls.__name__
        for cls in paddlenlp_subclasses(base)
        if cls.init_weights is base.init_weights and cls._init_weights is not base._init_weights
    })


SPEC = Patch(
    name="pretrained_init",
    summary="from_pretrained(low_cpu_mem_usage=True) initialises new weights and sets LayerNorm eps as without the flag",
    requires={"paddlenlp": "<3"},
    module="paddlenlp.transformers",
    probe=problem_present,
    apply=apply,
    imports=(_MODEL_UTILS, _BERT, "paddlenlp.utils.log"),
    links=("PaddleNLP#5270", "Paddle#76204"),
)
