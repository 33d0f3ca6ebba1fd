"""The per-layer-type rules: how a torch layer's weights become its Paddle counterpart's, and back.

One :class:`LayerRule` per pair of layer types. The transform is decided by the layer types on both
sides, never by shapes: torch ``nn.Linear`` stores ``[out, in]`` and ``paddle.nn.Linear`` ``[in, out]``
(transpose, even when the matrix is square), ``paddle.compat.nn.Linear`` and paddlenlp's
``TransposedLinear`` keep torch's layout (copy). Simple layers map parameter by parameter
(:class:`ParamRule`); many-to-many layers (packed attention projections, recurrent weights) give
layer-level converters (``to_paddle`` / ``to_torch``) instead.

Entries for recurrent layers and multi-head attention live in ``_rnn.py`` (``RULES``) and are
added to :data:`RULES` here when that module exists. Nothing here imports a framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "ParamRule",
    "ConfigRule",
    "LayerRule",
    "RULES",
    "find_rule",
    "find_rules",
    "rule_by_name",
    "transpose",
    "identity",
]


def identity(a: "np.ndarray") -> "np.ndarray":
    """The array itself (same layout on both sides)."""
    return a


def transpose(a: "np.ndarray") -> "np.ndarray":
    """The transpose of a 2-D weight (a view; the copy into the destination makes it contiguous)."""
    if a.ndim != 2:
        raise ValueError(f"a transposed weight must be 2-D, got shape {tuple(a.shape)}")
    return a.T


class ParamRule(NamedTuple):
    """One parameter or buffer: torch local name <-> Paddle local name, and the layout transform."""

    torch: str
    """Local name on the torch layer (``weight``, ``running_mean``)."""
    paddle: str
    """Local name on the Paddle layer (``weight``, ``_mean``)."""
    how: str = "copy"
    """Transform name shown in reports: ``copy``, ``transpose``, ``rename`` (same layout, other name)."""
    to_paddle: Callable[["np.ndarray"], "np.ndarray"] = identity
    """torch array -> Paddle layout."""
    to_torch: Callable[["np.ndarray"], "np.ndarray"] = identity
    """Paddle array -> torch layout."""


class ConfigRule(NamedTuple):
    """A configuration attribute both layers must agree on (compared before running)."""

    label: str
    torch_get: Callable[[Any], Any]
    paddle_get: Callable[[Any], Any]
    normalise: Optional[Callable[[Any], Any]] = None
    """Applied to both getters' values before comparing (e.g. rounding a float)."""


LayerConverter = Callable[[dict, Any, Any], dict]
"""``fn(arrays, torch_layer, paddle_layer) -> arrays`` for a whole layer (many-to-many layouts).

``arrays`` holds every canonical (not tied-alias) parameter and persistable buffer *under* the
source layer, recursively, by name relative to it (``in_proj_weight``, ``out_proj.weight``;
``weight_ih_l0``); the result must hold every canonical entry under the destination layer, by
relative name (``q_proj.weight``, ...), in the destination's layout. ``torch_layer`` /
``paddle_layer`` are the two layers (the source one is None when the source is a bare state dict),
for configuration such as ``num_heads`` or ``bidirectional``. Arrays are NumPy; return new arrays
or views, never modify the inputs.
"""

NamePairs = Callable[[Any, Any], list]
"""``fn(torch_layer | None, paddle_layer | None) -> [(paddle_rel_name, torch_rel_name, how), ...]``:
which entries feed which (``how``: ``split``, ``join``, ``transpose``, ...), for reports and for the
parameter pairing ``compare`` uses."""


class LayerRule(NamedTuple):
    """How the weights of one pair of layer types correspond.

    Type names are class ``__name__`` values; a name containing a dot is matched against the
    qualified type (``module.QualName``, suffix match) and takes precedence over bare names.
    """

    name: str
    """Rule name shown in pairings and reports (``linear``, ``batchnorm``, ...)."""
    torch_types: tuple[str, ...]
    paddle_types: tuple[str, ...]
    params: tuple[ParamRule, ...] = ()
    drop_torch: tuple[str, ...] = ()
    """torch buffers with no Paddle counterpart (``num_batches_tracked``): never used, never missing."""
    config: tuple[ConfigRule, ...] = ()
    to_paddle: Optional[LayerConverter] = None
    """Layer-level converter used instead of ``params`` (many-to-many layouts); torch locals -> Paddle locals."""
    to_torch: Optional[LayerConverter] = None
    """The inverse of ``to_paddle``: Paddle locals -> torch locals."""
    name_pairs: Optional[NamePairs] = None
    """For layer-level converters: which local names feed which (for reports and pairings)."""
    drop_paddle: tuple[str, ...] = ()
    """Paddle entries with no torch counterpart."""

    def torch_to_paddle_names(self) -> dict[str, ParamRule]:
        return {p.torch: p for p in self.params}

    def paddle_to_torch_names(self) -> dict[str, ParamRule]:
        return {p.paddle: p for p in self.params}


def _attr(name: str, default: Any = None) -> Callable[[Any], Any]:
    def get(layer: Any) -> Any:
        return getattr(layer, name, default)

    get.__name__ = f"get_{name.lstrip('_')}"
    return get


def _round(v: Any) -> Any:
    """A float rounded to 7 significant digits (float32 attributes read back as float64 compare
    equal; 1e-12 stays 1e-12, not 0)."""
    return float(f"{float(v):.7g}") if isinstance(v, (int, float)) and not isinstance(v, bool) else v


def _paddle_eps(layer: Any) -> Any:
    return getattr(layer, "_epsilon", getattr(layer, "epsilon", None))


def _paddle_bn_momentum(layer: Any) -> Any:
    m = getattr(layer, "_momentum", None)
    return None if m is None else 1.0 - float(m)


def _torch_bn_momentum(layer: Any) -> Any:
    m = getattr(layer, "momentum", None)
    return None if m is None else float(m)


def _paddle_dropout_p(layer: Any) -> Any:
    return getattr(layer, "p", None)


def _paddle_padding_idx(layer: Any) -> Any:
    """Paddle's padding index as torch keeps it (a negative one counted from the end; None for none)."""
    idx = getattr(layer, "_padding_idx", None)
    if idx is None:
        return None
    idx = int(idx)
    return idx + int(getattr(layer, "_num_embeddings", 0)) if idx < 0 else idx


def _torch_gelu_approx(layer: Any) -> Any:
    return getattr(layer, "approximate", "none") == "tanh"


def _paddle_gelu_approx(layer: Any) -> Any:
    return bool(getattr(layer, "_approximate", False))


_WB = (ParamRule("weight", "weight"), ParamRule("bias", "bias"))

_BASE_RULES: tuple[LayerRule, ...] = (
    LayerRule(
        "linear-torch-layout",
        ("Linear", "NonDynamicallyQuantizableLinear"),
        ("paddle.compat.nn.Linear", ".TransposedLinear"),
        _WB,
    ),
    LayerRule(
        "linear",
        ("Linear", "NonDynamicallyQuantizableLinear", "LazyLinear"),
        ("Linear",),
        (ParamRule("weight", "weight", "transpose", transpose, transpose), ParamRule("bias", "bias")),
    ),
    LayerRule(
        "conv",
        ("Conv1d", "Conv2d", "Conv3d"),
        ("Conv1D", "Conv2D", "Conv3D"),
        _WB,
        config=(
            ConfigRule("stride", _attr("stride"), _attr("_stride"), lambda v: tuple(v) if isinstance(v, (list, tuple)) else v),
            ConfigRule("groups", _attr("groups"), _attr("_groups")),
        ),
    ),
    LayerRule(
        "conv-transpose",
        ("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"),
        ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose"),
        _WB,
        config=(ConfigRule("groups", _attr("groups"), _attr("_groups")),),
    ),
    LayerRule(
        "embedding",
        ("Embedding",),
        ("Embedding",),
        (ParamRule("weight", "weight"),),
        config=(ConfigRule("padding_idx", _attr("padding_idx"), _paddle_padding_idx),),
    ),
    LayerRule(
        "layernorm",
        ("LayerNorm",),
        ("LayerNorm",),
        _WB,
        config=(ConfigRule("eps", _attr("eps"), _paddle_eps, _round),),
    ),
    LayerRule(
        "groupnorm",
        ("GroupNorm",),
        ("GroupNorm",),
        _WB,
        config=(
            ConfigRule("eps", _attr("eps"), _paddle_eps, _round),
            ConfigRule("num_groups", _attr("num_groups"), _attr("_num_groups")),
        ),
    ),
    LayerRule(
        "instancenorm",
        ("InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
        ("InstanceNorm1D", "InstanceNorm2D", "InstanceNorm3D"),
        (ParamRule("weight", "scale", "rename"), ParamRule("bias", "bias")),
        drop_torch=("running_mean", "running_var", "num_batches_tracked"),
        config=(ConfigRule("eps", _attr("eps"), _paddle_eps, _round),),
    ),
    LayerRule(
        "batchnorm",
        ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm"),
        ("BatchNorm1D", "BatchNorm2D", "BatchNorm3D", "BatchNorm", "SyncBatchNorm"),
        (
            ParamRule("weight", "weight"),
            ParamRule("bias", "bias"),
            ParamRule("running_mean", "_mean", "rename"),
            ParamRule("running_var", "_variance", "rename"),
        ),
        drop_torch=("num_batches_tracked",),
        config=(
            ConfigRule("eps", _attr("eps"), _paddle_eps, _round),
            ConfigRule("momentum (torch convention)", _torch_bn_momentum, _paddle_bn_momentum, _round),
        ),
    ),
    LayerRule("prelu", ("PReLU",), ("PReLU",), (ParamRule("weight", "_weight", "rename"),)),
    LayerRule(
        "dropout",
        ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d"),
        ("Dropout", "Dropout2D", "Dropout3D"),
        config=(ConfigRule("p", _attr("p"), _paddle_dropout_p, _round),),
    ),
    LayerRule(
        "gelu",
        ("GELU",),
        ("GELU",),
        config=(ConfigRule("approximate (tanh)", _torch_gelu_approx, _paddle_gelu_approx),),
    ),
)


def _extra_rules() -> tuple[LayerRule, ...]:
    """Entries from ``_rnn.py`` (recurrent layers, multi-head attention) when that module exists."""
    try:
        from ._rnn import RULES as rnn_rules
    except ImportError as exc:  # the module is optional; anything else it raises is a real error
        if getattr(exc, "name", None) not in (f"{__package__}._rnn", "_rnn"):
            raise
        return ()
    return tuple(rnn_rules)


RULES: tuple[LayerRule, ...] = _extra_rules() + _BASE_RULES
"""Every rule; the first that matches both sides wins (qualified-name matches before bare names)."""


def _matches(names: tuple[str, ...], type_name: str, qualified: str) -> int:
    """2 for a qualified-name match, 1 for a bare class-name match, 0 for none."""
    best = 0
    for n in names:
        if "." in n:
            if qualified == n or qualified.endswith("." + n) or qualified.endswith(n):
                return 2
        elif n == type_name:
            best = 1
    return best


def _match_side(names: tuple[str, ...], type_name: str | None, qualified: str | None) -> int:
    if type_name is None:
        # Side unknown (a bare state dict): matches, weakest; the framework's own classes (bare
        # names) before layout variants named by qualified name (paddle.compat.nn.Linear).
        return -1 if any("." not in n for n in names) else -2
    return _matches(names, type_name, qualified or type_name)


def find_rules(
    torch_type: str | None,
    paddle_type: str | None,
    *,
    torch_qualified: str | None = None,
    paddle_qualified: str | None = None,
) -> list[LayerRule]:
    """Every rule matching a torch layer type and a Paddle layer type, best first.

    Either type may be None (that side is a bare state dict: its layer type is unknown). A
    qualified-name match beats a bare-name match, so ``paddle.compat.nn.Linear`` (whose class is
    also called ``Linear``) gets the torch-layout rule. For an unknown side, rules naming the
    framework's own classes by bare name (``paddle.nn.Linear``) come before rules for layout
    variants named by qualified name only. Rules with equal scores keep their order in
    :data:`RULES`; callers that can tell them apart by the entries' names (whole-layer rules from a
    bare state dict) must try each in turn, see ``_pairing``.
    """
    if torch_type is None and paddle_type is None:
        return []
    key = (id(RULES), torch_type, paddle_type, torch_qualified, paddle_qualified)
    hit = _FOUND.get(key)
    if hit is not None and hit[0] is RULES:
        return list(hit[1])
    scored: list[tuple[tuple[int, int], int, LayerRule]] = []
    for i, rule in enumerate(RULES):
        t = _match_side(rule.torch_types, torch_type, torch_qualified)
        p = _match_side(rule.paddle_types, paddle_type, paddle_qualified)
        if t == 0 or p == 0:
            continue
        scored.append(((max(p, 0) + max(t, 0), p + t), -i, rule))
    scored.sort(key=lambda x: (x[0], x[1]), reverse=True)
    found = tuple(r for _, _, r in scored)
    if len(_FOUND) > 4096:
        _FOUND.clear()
    _FOUND[key] = (RULES, found)
    return list(found)


_FOUND: dict[tuple[Any, ...], tuple[tuple[LayerRule, ...], tuple[LayerRule, ...]]] = {}
"""find_rules' answers, per RULES tuple (a module that replaces RULES gets fresh answers)."""


def find_rule(
    torch_type: str | None,
    paddle_type: str | None,
    *,
    torch_qualified: str | None = None,
    paddle_qualified: str | None = None,
) -> LayerRule | None:
    """The best rule for a torch layer type and a Paddle layer type (see :func:`find_rules`).

    None when nothing matches. With one side unknown (a bare state dict) several rules can match
    equally well (``multihead-attention`` and ``multihead-attention-compat`` for a torch
    ``nn.MultiheadAttention``); this returns the first of them only, so pairing code working from
    a bare state dict uses :func:`find_rules` and the entries' names instead.
    """
    found = find_rules(torch_type, paddle_type, torch_qualified=torch_qualified, paddle_qualified=paddle_qualified)
    return found[0] if found else None


def rule_by_name(name: str) -> LayerRule:
    """The rule called ``name``; ``KeyError`` listing the known names otherwise."""
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(f"no layer rule named {name!r}; known: {', '.join(r.name for r in RULES)}")
