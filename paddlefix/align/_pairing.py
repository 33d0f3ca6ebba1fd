"""Pairing a Paddle model's layers and parameters with a PyTorch model's (or a state dict's).

This is the piece ``transfer``, ``compare`` and ``same_randomness`` share. How a pairing is made:

1. ``mapping`` (the user's) rewrites the first argument's parameter names: a ``{regex: replacement}``
   dict applied in order, or a callable ``name -> name | None`` (``None`` drops the entry).
2. Every layer of the destination that owns parameters or buffers looks for its counterpart by
   name: the same path (``how="name"``, or ``"mapping"`` when the mapping renamed it), then the
   Hugging Face <-> paddlenlp name rules (``"hf-names"``, see ``_names.py``).
3. The layer types on both sides choose the rule (``rules.py``) that maps local names and
   layouts: never the shapes alone. From a bare state dict the destination's type decides.
4. What is left is paired by structure (``"structure"``): leaf layers in registration order whose
   kind and (transformed) parameter shapes fit, only where that is unambiguous (as many candidates
   as layers); otherwise the layers stay unpaired, with their candidates.
5. Containers pair when their parameter sets correspond exactly; parameter-less leaves
   (activations, dropout) pair by position and type inside paired containers when unambiguous.

Tied parameters (one tensor under two names, a decoder tied to the embeddings) are one parameter:
the first name in registration order is canonical, the others are listed in ``tied``.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, NamedTuple, Optional, Sequence, TypeVar, Union, overload

from . import rules as _rules
from ._errors import TransferError
from ._names import Rewriter, name_rules
from .adapters import adapter_for, framework_of

__all__ = ["Pair", "ParamPair", "Missing", "Pairing", "pair", "MappingArg"]

MappingArg = Union[Mapping[str, str], Callable[[str], Optional[str]], None]


class Pair(NamedTuple):
    """Two layers that correspond (leaf or container)."""

    paddle_path: str
    """Dotted path in the Paddle model ("" is the root)."""
    torch_path: str
    paddle_type: str
    """Class name ("" when that side is a bare state dict)."""
    torch_type: str
    rule: str | None
    """The ``rules.py`` entry converting the weights; ``same-names`` for layers without an entry
    whose local names and shapes agree; None for layers without own parameters."""
    how: str
    """``name``, ``mapping``, ``hf-names``, ``structure`` (or ``position`` for parameter-less leaves)."""


class ParamPair(NamedTuple):
    """One destination parameter / buffer and the source entry that sets it."""

    paddle_name: str
    torch_name: str
    how: str
    """Transform name: ``copy``, ``transpose``, ``rename``, ``split``, ``join``, ..."""
    pair: int
    """Index into :attr:`Pairing.pairs` (-1 when the entry was paired by a parameter-level name rule)."""


class Missing(NamedTuple):
    """A destination parameter or buffer nothing sets, and why."""

    name: str
    reason: str
    candidates: tuple[str, ...]


class _Step(NamedTuple):
    dst_unit: str
    src_unit: str
    dst_names: tuple[str, ...]
    src_names: tuple[str, ...]
    rule: Any  # LayerRule | None
    param_rule: Any  # ParamRule | None
    how: str
    pair_how: str


@dataclass
class _Unit:
    path: str
    layer: Any
    type: str | None
    qualified: str | None
    params: dict[str, str]
    """local name -> full name."""


@dataclass
class _Side:
    framework: str | None
    model: Any
    tensors: dict[str, Any]
    alias: dict[str, str]
    """full name -> canonical full name (tied tensors)."""
    units: dict[str, _Unit]
    layers: list[tuple[str, Any]] = field(default_factory=list)

    _shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False, compare=False)

    def shape(self, name: str) -> tuple[int, ...]:
        """The shape of entry ``name`` (read once: a side's tensors do not change while it is paired)."""
        shape = self._shapes.get(name)
        if shape is None:
            shape = self._shapes[name] = tuple(int(d) for d in self.tensors[name].shape)
        return shape

    def canonical(self, name: str) -> str:
        return self.alias.get(name, name)


def _join(path: str, local: str) -> str:
    return f"{path}.{local}" if path else local


def _side_from_model(model: Any) -> _Side:
    ad = adapter_for(model)
    tensors: dict[str, Any] = {}
    alias: dict[str, str] = {}
    first: dict[int, str] = {}
    units: dict[str, _Unit] = {}
    layers = ad.named_layers(model)
    for path, layer in layers:
        locals_: dict[str, str] = {}
        for local, t in ad.own_params(layer) + ad.own_buffers(layer):
            full = _join(path, local)
            tensors[full] = t
            key = id(t)
            if key in first:
                alias[full] = first[key]
            else:
                first[key] = full
            locals_[local] = full
        if locals_:
            units[path] = _Unit(path, layer, ad.type_name(layer), ad.qualified_type(layer), locals_)
    return _Side(ad.framework, model, tensors, alias, units, layers)


def _side_from_state_dict(sd: Mapping[str, Any], framework: str | None) -> _Side:
    tensors: dict[str, Any] = {}
    alias: dict[str, str] = {}
    units: dict[str, _Unit] = {}
    seen: dict[tuple, str] = {}
    for name, t in sd.items():
        if not isinstance(name, str):
            raise TransferError(f"src: state dict keys must be strings, got {type(name).__name__} {name!r}")
        if not hasattr(t, "shape"):
            raise TransferError(
                f"src: state dict entry {name!r} is a {type(t).__name__}, not a tensor or NumPy array"
            )
        tensors[name] = t
        ptr = getattr(t, "data_ptr", None)
        if callable(ptr) and framework_of(t) == "torch" and t.numel() > 0:
            key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()), str(t.dtype))
            if key in seen:
                alias[name] = seen[key]
            else:
                seen[key] = name
        path, _, local = name.rpartition(".")
        units.setdefault(path, _Unit(path, None, None, None, {})).params[local] = name
    return _Side(framework, None, tensors, alias, units, [])


def _apply_mapping(names: list[str], mapping: MappingArg) -> dict[str, str]:
    """source name -> mapped name (dropped names are absent)."""
    if mapping is None:
        return {n: n for n in names}
    out: dict[str, str] = {}
    if callable(mapping) and not isinstance(mapping, Mapping):
        for n in names:
            m = mapping(n)
            if m is None:
                continue
            if not isinstance(m, str):
                raise TransferError(f"mapping: the callable returned {type(m).__name__} {m!r} for {n!r}; expected str or None")
            out[n] = m
        return out
    if not isinstance(mapping, Mapping):
        raise TransferError(
            f"mapping: expected a dict {{regex: replacement}}, a callable name -> name | None, or None; "
            f"got {type(mapping).__name__}"
        )
    compiled = []
    for pat, rep in mapping.items():
        if not isinstance(pat, str) or not (isinstance(rep, str) or rep is None):
            raise TransferError(f"mapping: entries must be str -> str | None, got {pat!r} -> {rep!r}")
        try:
            compiled.append((re.compile(pat), rep))
        except re.error as exc:
            raise TransferError(f"mapping: {pat!r} is not a valid regular expression: {exc}") from None
    for n in names:
        cur: str | None = n
        for rx, rep in compiled:
            if cur is not None and rx.search(cur):
                cur = None if rep is None else rx.sub(rep, cur)
        if cur is not None:
            out[n] = cur
    return out


_T = TypeVar("_T")


class _OnFirstUse(Generic[_T]):
    """A :class:`Pairing` attribute computed, with the other three, on first use (``Pairing._finish``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = "_" + name

    @overload
    def __get__(self, obj: None, objtype: Any = None) -> _OnFirstUse[_T]: ...

    @overload
    def __get__(self, obj: Pairing, objtype: Any = None) -> _T: ...

    def __get__(self, obj: Pairing | None, objtype: Any = None) -> _T | _OnFirstUse[_T]:
        if obj is None:
            return self
        obj._complete()
        value: _T = getattr(obj, self._attr)
        return value

    def __set__(self, obj: Pairing, value: _T) -> None:
        obj._complete()
        setattr(obj, self._attr, value)


class Pairing:
    """The correspondence between a Paddle model and a torch model (or a state dict). Data first.

    Attributes:
        pairs: layers paired (leaves with parameters, containers, parameter-less leaves), in the
            Paddle model's registration order.
        params: every destination parameter / buffer and the source entry setting it.
        unpaired_paddle / unpaired_torch: paths of layers with own parameters left unpaired.
        missing: destination parameters / buffers nothing sets, with candidates.
        unused: source entries no destination uses (tied aliases of used ones excluded).
        tied: (alias, canonical) names on the destination that share one tensor between layers
            (a decoder tied to the embeddings).
        aliases: (alias, canonical) second names a layer gives its own parameters (a Paddle RNN
            layer's flat ``weight_ih_l0`` for ``0.cell.weight_ih``): set once, not tied weights.
        tied_sources: (source entry, source entry used) pairs where a state dict holds a tied
            tensor twice (equal values, the destination ties them): not listed as unused.
        src / dst: ``"paddle"`` / ``"torch"`` (``src`` may be None for a NumPy state dict of unknown origin).
    """

    pairs: _OnFirstUse[list[Pair]] = _OnFirstUse()
    params: _OnFirstUse[list[ParamPair]] = _OnFirstUse()
    unpaired_paddle: _OnFirstUse[list[str]] = _OnFirstUse()
    unpaired_torch: _OnFirstUse[list[str]] = _OnFirstUse()

    def __init__(self) -> None:
        self._pairs: list[Pair] = []
        self._params: list[ParamPair] = []
        self._unpaired_paddle: list[str] = []
        self._unpaired_torch: list[str] = []
        self._rows: list[tuple[str, str, str, str]] = []
        """(paddle name, torch name, transform, paddle layer) per destination entry, in step order."""
        self._finish: Callable[[], None] | None = None
        """Computes the four layer-level lists on first use (``transfer`` needs none of them)."""
        self.missing: list[Missing] = []
        self.unused: list[str] = []
        self.dropped: list[str] = []
        self.tied: list[tuple[str, str]] = []
        self.aliases: list[tuple[str, str]] = []
        self.tied_sources: list[tuple[str, str]] = []
        self.conflicts: list[str] = []
        self.src: str | None = None
        self.dst: str = ""
        self._steps: list[_Step] = []
        self._src: _Side | None = None
        self._dst: _Side | None = None

    def _complete(self) -> None:
        finish, self._finish = self._finish, None
        if finish is not None:
            finish()

    # -- lookups -------------------------------------------------------------------------
    def for_paddle(self, path: str) -> Pair | None:
        """The pair whose Paddle side is ``path``, or None."""
        for p in self.pairs:
            if p.paddle_path == path:
                return p
        return None

    def for_torch(self, path: str) -> Pair | None:
        """The pair whose torch side is ``path``, or None."""
        for p in self.pairs:
            if p.torch_path == path:
                return p
        return None

    def torch_name_of(self, paddle_name: str) -> str | None:
        """The torch parameter name paired with a Paddle parameter name (tied aliases resolved)."""
        for p in self.params:
            if p.paddle_name == paddle_name:
                return p.torch_name
        return None

    def paddle_name_of(self, torch_name: str) -> str | None:
        """The Paddle parameter name paired with a torch parameter name."""
        for p in self.params:
            if p.torch_name == torch_name:
                return p.paddle_name
        return None

    @property
    def ok(self) -> bool:
        """True when every destination parameter is set and nothing conflicts."""
        return not self.missing and not self.conflicts

    # -- output --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {
            "src": self.src,
            "dst": self.dst,
            "pairs": [p._asdict() for p in self.pairs],
            "params": [p._asdict() for p in self.params],
            "unpaired_paddle": list(self.unpaired_paddle),
            "unpaired_torch": list(self.unpaired_torch),
            "missing": [{"name": m.name, "reason": m.reason, "candidates": list(m.candidates)} for m in self.missing],
            "unused": list(self.unused),
            "dropped": list(self.dropped),
            "tied": [list(t) for t in self.tied],
            "aliases": [list(t) for t in self.aliases],
            "tied_sources": [list(t) for t in self.tied_sources],
            "conflicts": list(self.conflicts),
        }

    def __str__(self) -> str:
        lines = [f"Pairing: {len(self.pairs)} layer pairs, {len(self.params)} parameters"]
        rows = [(p.paddle_path or "<root>", p.torch_path or "<root>", p.rule or "-", p.how) for p in self.pairs]
        lines += _table(("paddle", "torch", "rule", "how"), rows)
        if self.unpaired_paddle:
            lines.append("unpaired paddle layers: " + ", ".join(self.unpaired_paddle))
        if self.unpaired_torch:
            lines.append("unpaired torch layers: " + ", ".join(self.unpaired_torch))
        for m in self.missing:
            lines.append(_clip(f"missing {m.name}: {m.reason}"))
        return "\n".join(_clip(line) for line in lines)

    __repr__ = __str__


def _clip(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], width: int = 100) -> list[str]:
    """Fixed-width columns that fit ``width``: long cells are shortened from the left (paths)."""
    if not rows:
        return []
    n = len(header)
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(n)]
    budget = width - 2 * (n - 1)
    while sum(widths) > budget:
        i = max(range(n), key=lambda k: widths[k])
        widths[i] -= 1

    def cell(text: str, w: int) -> str:
        return text if len(text) <= w else "…" + text[len(text) - w + 1 :]

    out = ["  ".join(cell(h, widths[i]).ljust(widths[i]) for i, h in enumerate(header)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for r in rows:
        out.append("  ".join(cell(c, widths[i]).ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return out


# -- the pairing itself -----------------------------------------------------------------------
class _Pairer:
    def __init__(self, src: _Side, dst: _Side, mapping: MappingArg) -> None:
        self.src, self.dst = src, dst
        self.same_framework = src.framework == dst.framework
        names = list(src.tensors)
        self.mapped = _apply_mapping(names, mapping)
        self.changed = {n for n, m in self.mapped.items() if m != n}
        self.dropped = [n for n in names if n not in self.mapped]
        self.conflicts: list[str] = []
        by_mapped: dict[str, str] = {}
        for n, m in self.mapped.items():
            other = by_mapped.get(m)
            if other is not None and src.canonical(other) != src.canonical(n):
                self.conflicts.append(f"source entries {other!r} and {n!r} are both mapped to {m!r}")
                continue
            by_mapped.setdefault(m, n)
        self.by_mapped = by_mapped
        # mapped layer path -> {mapped local: source full name}
        self.munits: dict[str, dict[str, str]] = {}
        for m, n in by_mapped.items():
            path, _, local = m.rpartition(".")
            self.munits.setdefault(path, {})[local] = n
        paddle_model = dst.model if dst.framework == "paddle" else src.model
        self.name_rules = name_rules(paddle_model)
        self._rewriter = Rewriter(self.name_rules)
        self.steps: list[_Step] = []
        self.done: set[str] = set()  # destination canonical names set
        self.used: set[str] = set()  # source names used
        self.unit_pairs: dict[str, tuple[str, str]] = {}  # dst unit -> (src unit path, how)
        self.reasons: dict[str, tuple[str, tuple[str, ...]]] = {}
        self.unfit: set[str] = set()  # destination layers found by name whose shapes do not fit

    # direction helpers
    def _to_src_paths(self, dst_path: str, params: bool = False) -> list[str]:
        if self.same_framework:
            return []
        return [p for p, _ in self._rewriter.rewrite(dst_path, self.dst.framework != "paddle", params)]

    def _rule(self, d: _Unit, s_type: str | None, s_qual: str | None) -> Any:
        if self.same_framework:
            return None
        if self.dst.framework == "paddle":
            return _rules.find_rule(s_type, d.type, torch_qualified=s_qual, paddle_qualified=d.qualified)
        return _rules.find_rule(d.type, s_type, torch_qualified=d.qualified, paddle_qualified=s_qual)

    def _src_unit_of(self, src_names: dict[str, str]) -> tuple[str | None, str | None, Any, str]:
        """Type, qualified type, layer and original path of the source layer owning these names."""
        any_name = next(iter(src_names.values()))
        path = any_name.rpartition(".")[0]
        u = self.src.units.get(path)
        if u is None:
            return None, None, None, path
        return u.type, u.qualified, u.layer, path

    def _resolve(self, d: _Unit, mpath: str, how: str) -> tuple[list[_Step], list[str]] | None:
        """Steps setting every canonical param of ``d`` from mapped unit ``mpath``, or None if impossible."""
        snames = self.munits.get(mpath)
        if not snames or all(n in self.used for n in snames.values()):
            return None  # absent, or already the source of another layer
        s_type, s_qual, s_layer, s_path = self._src_unit_of(snames)
        rule = self._rule(d, s_type, s_qual)
        pending = [(loc, full) for loc, full in d.params.items() if full not in self.dst.alias and full not in self.done]
        if not pending:
            return None
        steps: list[_Step] = []
        problems: list[str] = []
        if rule is not None and (rule.to_paddle is not None or rule.to_torch is not None):
            return None  # converted as a whole layer (stage 0), or not at all
        dst_is_paddle = self.dst.framework == "paddle"
        by_dst = (rule.paddle_to_torch_names() if dst_is_paddle else rule.torch_to_paddle_names()) if rule else {}
        if rule is not None:
            dropped = set(rule.drop_paddle if dst_is_paddle else rule.drop_torch)
            pending = [(loc, full) for loc, full in pending if loc not in dropped]
        for loc, full in pending:
            prule = by_dst.get(loc)
            src_local_names = [prule.torch if dst_is_paddle else prule.paddle] if prule else []
            src_local_names.append(loc)
            sname = next((snames[x] for x in src_local_names if x in snames), None)
            if sname is None:
                problems.append(f"{full}: no {' / '.join(dict.fromkeys(src_local_names))} in source layer {s_path or '<root>'}")
                continue
            t_how = prule.how if prule else "copy"
            expected = self.src.shape(sname)
            if t_how == "transpose":
                expected = tuple(reversed(expected))
            if expected != self.dst.shape(full):
                problems.append(
                    f"{full}: shape {self.dst.shape(full)} but {sname} gives {expected}"
                    + (f" after {t_how}" if t_how == "transpose" else "")
                )
                continue
            steps.append(_Step(d.path, s_path, (full,), (sname,), rule, prule, t_how, how))
        return steps, problems

    def _accept(self, d: _Unit, mpath: str, steps: list[_Step], how: str) -> None:
        for st in steps:
            self.steps.append(st)
            self.done.update(st.dst_names)
            self.used.update(st.src_names)
        src_path = steps[0].src_unit if steps else mpath
        self.unit_pairs[d.path] = (src_path, how)

    def _layer_rules(self) -> None:
        """Layers converted as a whole (packed attention projections, recurrent weights).

        A rule with a layer-level converter matches a destination layer (leaf or container); its
        converter receives every canonical source entry under the paired source layer (names
        relative to it) and returns every canonical destination entry under the destination layer.
        """
        if self.same_framework:
            return
        layered = [r for r in _rules.RULES if r.to_paddle is not None or r.to_torch is not None]
        if not layered:
            return
        dst = self.dst
        d_layers = dst.layers or [(u.path, u.layer) for u in dst.units.values()]
        ad = adapter_for(dst.model) if dst.model is not None else None
        matched: dict[tuple[str, str], bool] = {}  # (type, qualified type) -> some layer-level rule names it
        d_under: dict[str, list[str]] | None = None
        s_under: dict[str, list[str]] | None = None
        for path, layer in d_layers:
            if ad is None:
                break
            d_type, d_qual = ad.type_name(layer), ad.qualified_type(layer)
            hit = matched.get((d_type, d_qual))
            if hit is None:
                hit = matched[(d_type, d_qual)] = any(
                    _rules._match_side(r.paddle_types if dst.framework == "paddle" else r.torch_types, d_type, d_qual) > 0
                    for r in layered)
            if not hit:
                continue
            if d_under is None or s_under is None:  # names under each layer path, in order (built once)
                d_under, s_under = _names_under(dst.tensors), _names_under(self.by_mapped)
            d_names = tuple(n for n in d_under.get(path, ()) if n not in dst.alias and n not in self.done)
            if not d_names:
                continue
            for mpath, how in [(path, "name")] + [(x, "hf-names") for x in self._to_src_paths(path)]:
                mprefix = mpath + "." if mpath else ""
                s_names = {m: n for m in s_under.get(mpath, ())
                           if self.src.canonical(n := self.by_mapped[m]) == n and n not in self.used}
                if not s_names:
                    continue
                orig = self._orig_layer_path(mpath, s_names)
                s_unit_layer = dict(self.src.layers).get(orig) if self.src.layers else None
                s_type = type(s_unit_layer).__name__ if s_unit_layer is not None else None
                s_qual = adapter_for(s_unit_layer).qualified_type(s_unit_layer) if s_unit_layer is not None else None
                if self.dst.framework == "paddle":
                    found = _rules.find_rules(s_type, d_type, torch_qualified=s_qual, paddle_qualified=d_qual)
                else:
                    found = _rules.find_rules(d_type, s_type, torch_qualified=d_qual, paddle_qualified=s_qual)
                if s_unit_layer is not None:
                    found = found[:1]
                else:
                    # A bare state dict: the source layer type is unknown, so several rules can match
                    # the destination equally (multihead-attention and its compat variant); the
                    # entries' names decide. None fits: a Linear-built attention, paired by sublayers.
                    rel = {m[len(mprefix):] for m in s_names}
                    if found and (found[0].to_paddle is not None or found[0].to_torch is not None):
                        found = [r for r in found if r.to_paddle is not None or r.to_torch is not None]
                        found = [r for r in found if _bare_fits(r, layer, rel, dst.framework)][:1]
                    else:
                        found = []  # the best match is a parameter-level rule (or none)
                rule = found[0] if found else None
                if rule is None or (rule.to_paddle is None and rule.to_torch is None):
                    continue
                if how == "name" and any(n in self.changed for n in s_names.values()):
                    how = "mapping"
                st = _Step(path, orig, d_names, tuple(s_names.values()), rule, None, _layer_how(rule, s_unit_layer, layer, self.dst.framework), how)
                self.steps.append(st)
                self.done.update(d_names)
                self.used.update(st.src_names)
                self.unit_pairs[path] = (orig, how)
                break

    def _orig_layer_path(self, mpath: str, s_names: dict[str, str]) -> str:
        """The source layer path behind a mapped path (the longest common prefix of its entries)."""
        if not self.changed:
            return mpath
        parts = [n.split(".")[:-1] for n in s_names.values()]
        common: list[str] = []
        for seg in zip(*parts):
            if len(set(seg)) != 1:
                break
            common.append(seg[0])
        return ".".join(common)

    def run(self) -> None:
        dst, src = self.dst, self.src
        # 0. layers converted as a whole
        self._layer_rules()
        # 1. parameter-level name rules (local names that differ between HF and paddlenlp)
        for d in dst.units.values():
            for loc, full in d.params.items():
                if full in dst.alias or full in self.done:
                    continue
                for cand in self._to_src_paths(full, params=True):
                    sname = self.by_mapped.get(cand)
                    if sname is None or sname in self.used or src.shape(sname) != dst.shape(full):
                        continue
                    self.steps.append(_Step(d.path, sname.rpartition(".")[0], (full,), (sname,), None, None, "copy", "hf-names"))
                    self.done.add(full)
                    self.used.add(sname)
                    break
        # 2. layers by name: same path, then HF <-> paddlenlp rules
        for d in dst.units.values():
            candidates = [(d.path, "name")] + [(p, "hf-names") for p in self._to_src_paths(d.path)]
            for mpath, how in candidates:
                if mpath not in self.munits:
                    continue
                if how == "name" and any(n in self.changed for n in self.munits[mpath].values()):
                    how = "mapping"
                res = self._resolve(d, mpath, how)
                if res is None:
                    continue
                steps, problems = res
                if problems and all(": no " in x and " in source layer " in x for x in problems):
                    # Some entries absent from the source layer: copy what is there, name the rest.
                    for x in problems:
                        self.reasons[x.split(":", 1)[0]] = (x.split(": ", 1)[1], ())
                    if steps:
                        self._accept(d, mpath, steps, how)
                    break
                if problems:
                    # The layer was found by name but its shapes do not fit: nothing of it is copied.
                    own = {p.split(":", 1)[0]: p.split(": ", 1)[1] for p in problems}
                    for full in d.params.values():
                        if full in self.dst.alias or full in self.done:
                            continue
                        reason = own.get(full) or "its layer pairs by name but does not fit: " + "; ".join(problems)
                        self.reasons[full] = (reason, ())
                    self.unfit.add(d.path)
                    break
                self._accept(d, mpath, steps, how)
                break
        # 3. structure: leaf layers left on both sides, by kind and shapes, when unambiguous
        self._structure()

    def _left_dst(self) -> list[_Unit]:
        out = []
        for d in self.dst.units.values():
            if d.path in self.unfit:
                continue
            pending = [f for f in d.params.values() if f not in self.dst.alias]
            if pending and not any(f in self.done for f in pending):
                out.append(d)
        return out

    def _left_src(self) -> list[str]:
        out = []
        for mpath, names in self.munits.items():
            if not any(n in self.used or self.src.canonical(n) in self.used for n in names.values()):
                out.append(mpath)
        return out

    def _fits(self, d: _Unit, mpath: str) -> list[_Step] | None:
        snames = self.munits[mpath]
        s_type, _, _, _ = self._src_unit_of(snames)
        res = self._resolve(d, mpath, "structure")
        if res is None or res[1]:
            return None
        steps = res[0]
        if not steps:
            return None
        rule = steps[0].rule
        if rule is None and s_type is not None and s_type != d.type:
            return None  # layers without a rule pair by structure only when their types are equal
        used = {n for st in steps for n in st.src_names}
        drops = set(rule.drop_torch) | set(rule.drop_paddle) if rule is not None else set()
        extra = [loc for loc, n in snames.items() if n not in used and loc not in drops and self.src.canonical(n) == n]
        if extra:
            return None
        return steps

    def _structure(self) -> None:
        left_d = self._left_dst()
        left_s = self._left_src()
        if not left_d or not left_s:
            return
        fits: dict[str, dict[str, list[_Step]]] = {}
        for d in left_d:
            fits[d.path] = {}
            for m in left_s:
                steps = self._fits(d, m)
                if steps is not None:
                    fits[d.path][m] = steps
        groups: dict[tuple[str, ...], list[_Unit]] = {}
        for d in left_d:
            key = tuple(fits[d.path])
            if key:
                groups.setdefault(key, []).append(d)
        for key, ds in groups.items():
            overlap = any(set(key) & set(k2) for k2 in groups if k2 != key)
            if len(ds) == len(key) and not overlap:
                for d, m in zip(ds, key):
                    self._accept(d, m, fits[d.path][m], "structure")
            else:
                for d in ds:
                    why = (
                        f"paired by neither name nor structure: {len(ds)} layers of this kind and shape, "
                        f"{len(key)} source candidates"
                    )
                    for full in d.params.values():
                        if full not in self.dst.alias:
                            self.reasons[full] = (why, tuple(self._orig_paths(key)))

    def _orig_paths(self, mpaths: tuple[str, ...]) -> list[str]:
        out = []
        for m in mpaths:
            names = self.munits[m]
            out.append(next(iter(names.values())).rpartition(".")[0])
        return out


def _bare_fits(rule: Any, dst_layer: Any, rel_names: set[str], dst_framework: str | None) -> bool:
    """From a bare state dict the source layer's type is unknown: a whole-layer rule applies only
    when the entries carry every source name its ``name_pairs`` read."""
    if rule.name_pairs is None:
        return True
    dst_is_paddle = dst_framework == "paddle"
    try:
        triples = rule.name_pairs(None, dst_layer) if dst_is_paddle else rule.name_pairs(dst_layer, None)
    except Exception:  # the rule cannot describe this layer: pair its sublayers instead
        return False
    wanted = {t if dst_is_paddle else p for p, t, _ in triples} - {None}
    return wanted <= rel_names


def _layer_how(rule: Any, src_layer: Any, dst_layer: Any, dst_framework: str | None) -> str:
    if rule.name_pairs is None:
        return rule.name
    t_layer, p_layer = (src_layer, dst_layer) if dst_framework == "paddle" else (dst_layer, src_layer)
    try:
        hows = sorted({h for _, _, h in rule.name_pairs(t_layer, p_layer)})
    except Exception:  # a report detail only
        return rule.name
    return "+".join(hows) if hows else rule.name


def _to_numpy(t: Any) -> Any:
    import numpy as np

    return adapter_for(t).to_numpy(t) if framework_of(t) is not None else np.asarray(t)


def _tied_duplicate(p: _Pairer, name: str, out: Pairing) -> bool:
    """True if a source entry names a tied alias on the destination and equals what set the canonical.

    A bare state dict loses tying: its ``cls.predictions.decoder.weight`` is a second copy of the
    word embeddings. Such a copy is recorded in ``out.tied_sources`` instead of ``unused``.
    """
    m = p.mapped.get(name)
    if m is None:
        return False
    path, _, local = m.rpartition(".")
    if p.same_framework:
        paths = [path]
    else:
        paths = [path] + [x for x, _ in p._rewriter.rewrite(path, p.dst.framework == "paddle")]
    for dp in paths:
        d_name = _join(dp, local)
        canon = p.dst.alias.get(d_name)
        if canon is None:
            continue
        for st in p.steps:
            if canon in st.dst_names and len(st.src_names) == 1:
                a, b = _to_numpy(p.src.tensors[name]), _to_numpy(p.src.tensors[st.src_names[0]])
                if a.shape == b.shape and a.dtype == b.dtype and bool((a == b).all()):
                    out.tied_sources.append((name, st.src_names[0]))
                    return True
    return False


def _layer_aliases(side: _Side) -> set[tuple[str, str]]:
    """(alias, canonical) pairs that are one layer's own second names for its parameters.

    A Paddle RNN layer (``paddle.nn.LSTM`` ...) registers every cell parameter a second time
    under a flat torch-like name (``weight_ih_l0`` is ``0.cell.weight_ih``): that is not a tied
    weight (two layers sharing one tensor), only another name, reported in ``aliases``.
    """
    if not side.alias or side.framework != "paddle" or not side.layers:
        return set()
    ad = adapter_for(side.model)
    layered = [r for r in _rules.RULES if r.to_paddle is not None or r.to_torch is not None]
    out: set[tuple[str, str]] = set()
    for path, layer in side.layers:
        d_type, d_qual = ad.type_name(layer), ad.qualified_type(layer)
        if not any(_rules._match_side(r.paddle_types, d_type, d_qual) > 0 for r in layered):
            continue
        prefix = path + "." if path else ""
        own = {_join(path, local) for local, _ in ad.own_params(layer) + ad.own_buffers(layer)}
        for a, c in side.alias.items():
            if (a in own or c in own) and a.startswith(prefix) and c.startswith(prefix):
                out.add((a, c))
    return out


def _candidates(src: _Side, unused: list[str], name: str, shape: tuple[int, ...]) -> tuple[str, ...]:
    fit = [n for n in unused if src.shape(n) in (shape, tuple(reversed(shape)))]
    fit.sort(key=lambda n: -difflib.SequenceMatcher(None, n, name).ratio())
    return tuple(fit[:5])


def _build(src: _Side, dst: _Side, mapping: MappingArg) -> Pairing:
    p = _Pairer(src, dst, mapping)
    p.run()
    out = Pairing()
    out.src, out.dst = src.framework, dst.framework or ""
    out._steps, out._src, out._dst = p.steps, src, dst
    out.conflicts = list(p.conflicts)
    out.dropped = p.dropped
    dst_is_paddle = dst.framework == "paddle"

    # unused source names (tied aliases of used ones count as used; rule-dropped buffers listed)
    used_canon = {src.canonical(n) for n in p.used}
    out.unused = [n for n in src.tensors if n in p.mapped and n not in p.used and src.canonical(n) not in used_canon]
    # missing destination names
    drops: set[str] = set()
    unit_rule: dict[str, Any] = {}  # destination layer -> the rule of its first step that has one
    for st in p.steps:
        if st.rule is not None:
            unit_rule.setdefault(st.dst_unit, st.rule)
    for d in dst.units.values():
        rule = unit_rule.get(d.path)
        if rule is None and d.type is not None and not p.same_framework:
            rule = p._rule(d, None, None)
        if rule is not None:
            dropped_locals = rule.drop_paddle if dst_is_paddle else rule.drop_torch
            drops.update(d.params[loc] for loc in dropped_locals if loc in d.params)
    # source entries a rule drops (num_batches_tracked) are not "unused" when their layer paired
    src_drop: set[str] = set()
    for st in p.steps:
        if st.rule is not None:
            locals_ = st.rule.drop_torch if dst_is_paddle else st.rule.drop_paddle
            for loc in locals_:
                n = _join(st.src_unit, loc)
                if n in src.tensors:
                    src_drop.add(n)
    out.unused = [n for n in out.unused if n not in src_drop]
    out.unused = [n for n in out.unused if not _tied_duplicate(p, n, out)]
    internal = _layer_aliases(dst)
    for full in dst.tensors:
        if full in dst.alias:
            if (full, dst.alias[full]) in internal:
                out.aliases.append((full, dst.alias[full]))
            else:
                out.tied.append((full, dst.alias[full]))
            continue
        if full in p.done or full in drops:
            continue
        reason, cands = p.reasons.get(full, ("no source entry pairs with it", ()))
        if not cands:
            cands = _candidates(src, out.unused, full, dst.shape(full))
        out.missing.append(Missing(full, reason, cands))

    out._rows = _param_rows(p, src, dst)
    out._finish = functools.partial(_pairs_and_params, out, p, src, dst)
    return out


def _param_rows(p: _Pairer, src: _Side, dst: _Side) -> list[tuple[str, str, str, str]]:
    """(paddle name, torch name, transform, paddle layer) for every destination entry, in step order."""
    paddle_side, torch_side = (dst, src) if dst.framework == "paddle" else (src, dst)
    dst_is_paddle = dst.framework == "paddle"
    rows: list[tuple[str, str, str, str]] = []
    for st in p.steps:
        pp = st.dst_unit if dst_is_paddle else st.src_unit
        if len(st.dst_names) == 1 and len(st.src_names) == 1:
            dn, sn = st.dst_names[0], st.src_names[0]
            rows.append((*((dn, sn) if dst_is_paddle else (sn, dn)), st.how, pp))
            continue
        triples = _name_triples(st, paddle_side, torch_side, dst_is_paddle)
        if triples:
            rows.extend((pn, tn, how, pp) for pn, tn, how in triples)
            continue
        for dn in st.dst_names:
            sn = "+".join(st.src_names)
            rows.append((*((dn, sn) if dst_is_paddle else (sn, dn)), st.how, pp))
    return rows


def _pairs_and_params(out: Pairing, p: _Pairer, src: _Side, dst: _Side) -> None:
    paddle_side, torch_side = (dst, src) if dst.framework == "paddle" else (src, dst)
    dst_is_paddle = dst.framework == "paddle"
    # leaf pairs from steps
    leaf: dict[str, tuple[str, str, str | None]] = {}  # paddle path -> (torch path, how, rule)
    for st in p.steps:
        if st.pair_how == "hf-names" and st.rule is None and st.param_rule is None and st.dst_unit not in p.unit_pairs:
            continue  # a parameter-level rule, not a layer pair
        pp, tp = (st.dst_unit, st.src_unit) if dst_is_paddle else (st.src_unit, st.dst_unit)
        rule_name = st.rule.name if st.rule is not None else ("copy" if p.same_framework else "same-names")
        leaf.setdefault(pp, (tp, st.pair_how, rule_name))

    def types(side: _Side, path: str) -> str:
        u = side.units.get(path)
        if u is not None and u.type:
            return u.type
        for lp, layer in side.layers:
            if lp == path:
                return type(layer).__name__
        return ""

    pairs: dict[str, Pair] = {}
    for pp, (tp, how, rule) in leaf.items():
        pairs[pp] = Pair(pp, tp, types(paddle_side, pp), types(torch_side, tp), rule, how)

    # containers: parameter sets correspond exactly
    if paddle_side.model is not None and torch_side.model is not None:
        _containers(pairs, p, paddle_side, torch_side, dst_is_paddle)

    order = {path: i for i, (path, _) in enumerate(paddle_side.layers)}
    if not order:
        order = {path: i for i, path in enumerate(paddle_side.units)}
    out._pairs = sorted(pairs.values(), key=lambda x: order.get(x.paddle_path, len(order)))
    index = {x.paddle_path: i for i, x in enumerate(out._pairs)}
    out._params = [ParamPair(pn, tn, how, index.get(unit, -1)) for pn, tn, how, unit in out._rows]
    paired_p = set(pairs)
    paired_t = {x.torch_path for x in pairs.values()}
    covered = p.done | p.used
    out._unpaired_paddle = [u for u in paddle_side.units if u not in paired_p and _has_canon(paddle_side, u, covered)]
    out._unpaired_torch = [u for u in torch_side.units if u not in paired_t and _has_canon(torch_side, u, covered)]


def _name_triples(st: _Step, paddle_side: _Side, torch_side: _Side, dst_is_paddle: bool) -> list[tuple[str, str, str]]:
    """Full-name (paddle, torch, how) triples of a whole-layer step, from its rule's ``name_pairs``."""
    if st.rule is None or st.rule.name_pairs is None:
        return []
    p_path, t_path = (st.dst_unit, st.src_unit) if dst_is_paddle else (st.src_unit, st.dst_unit)
    p_layer = dict(paddle_side.layers).get(p_path) if paddle_side.layers else None
    t_layer = dict(torch_side.layers).get(t_path) if torch_side.layers else None
    try:
        triples = st.rule.name_pairs(t_layer, p_layer)
    except Exception:  # a report detail only: fall back to the joined names
        return []
    return [(_join(p_path, pl), _join(t_path, tl), how) for pl, tl, how in triples]


def _names_under(names: Any) -> dict[str, list[str]]:
    """layer path -> the names (of ``names``, in order) of the entries under it; ``""`` holds all."""
    under: dict[str, list[str]] = {"": []}
    for n in names:
        under[""].append(n)
        k = n.find(".")
        while k >= 0:
            under.setdefault(n[:k], []).append(n)
            k = n.find(".", k + 1)
    return under


def _has_canon(side: _Side, path: str, covered: set[str]) -> bool:
    return any(f not in side.alias and f not in covered for f in side.units[path].params.values())


def _containers(pairs: dict[str, Pair], p: _Pairer, paddle_side: _Side, torch_side: _Side, dst_is_paddle: bool) -> None:
    # paddle canonical name -> the torch canonical names it comes from
    p2t: dict[str, tuple[str, ...]] = {}
    for st in p.steps:
        pn, tn = (st.dst_names, st.src_names) if dst_is_paddle else (st.src_names, st.dst_names)
        for a in pn:
            p2t[paddle_side.canonical(a)] = tuple(torch_side.canonical(b) for b in tn)

    def index(side: _Side, through: dict[str, tuple[str, ...]] | None = None) -> dict[str, set[str] | None]:
        """layer path -> canonical names of every entry under it (read ``through`` a mapping:
        None for a layer holding an entry the mapping lacks)."""
        under: dict[str, set[str] | None] = {}
        for path, names in _names_under(side.tensors).items():
            canon = {side.alias.get(n, n) for n in names}
            if through is None:
                under[path] = canon
            elif all(c in through for c in canon):
                under[path] = {t for c in canon for t in through[c]}
            else:
                under[path] = None
        return under

    t_under, p_under = index(torch_side), index(paddle_side, p2t)
    t_key: dict[frozenset, list[str]] = {}
    for tp, _ in torch_side.layers:
        names = t_under.get(tp)
        if names:
            t_key.setdefault(frozenset(names), []).append(tp)
    p_key: dict[frozenset, list[str]] = {}
    for pp, _ in paddle_side.layers:
        names = p_under.get(pp)
        if names:
            p_key.setdefault(frozenset(names), []).append(pp)
    p_layers, t_layers = dict(paddle_side.layers), dict(torch_side.layers)
    taken_t = {x.torch_path for x in pairs.values()}
    for key, pps in p_key.items():
        tps = [t for t in t_key.get(key, []) if t not in taken_t]
        pps = [x for x in pps if x not in pairs]
        for pp, tp in zip(pps, tps):
            pairs[pp] = Pair(pp, tp, type(p_layers[pp]).__name__, type(t_layers[tp]).__name__, None,
                             "name" if pp == tp else "structure")
            taken_t.add(tp)
    # parameter-less leaves by position and type inside paired layers
    p_leaves, t_leaves = _paramless_leaves(paddle_side), _paramless_leaves(torch_side)
    for pp, pr in list(pairs.items()):
        pc, tc = p_leaves.get(pp), t_leaves.get(pr.torch_path)
        if not pc or not tc:
            continue
        by_kind_p: dict[str, list[str]] = {}
        by_kind_t: dict[str, list[str]] = {}
        for path, c in pc:
            by_kind_p.setdefault(type(c).__name__.lower(), []).append(path)
        for path, c in tc:
            by_kind_t.setdefault(_torch_kind(type(c).__name__), []).append(path)
        for kind, plist in by_kind_p.items():
            tlist = by_kind_t.get(kind, [])
            if len(plist) == len(tlist):
                for a, b in zip(plist, tlist):
                    if a not in pairs and b not in taken_t:
                        pairs[a] = Pair(a, b, type(p_layers[a]).__name__, type(t_layers[b]).__name__, None, "position")
                        taken_t.add(b)


def _paramless_leaves(side: _Side) -> dict[str, list[tuple[str, Any]]]:
    """parent path -> (path, layer) of its children without parameters, buffers or children, in order."""
    ad = adapter_for(side.model)
    parents = {path.rpartition(".")[0] for path, _ in side.layers if path}
    out: dict[str, list[tuple[str, Any]]] = {}
    for path, layer in side.layers:
        if path and path not in side.units and path not in parents and not ad.children(layer):
            out.setdefault(path.rpartition(".")[0], []).append((path, layer))
    return out


_TORCH_KINDS = {"geluactivation": "gelu", "dropout1d": "dropout", "dropout2d": "dropout2d", "dropout3d": "dropout3d"}


def _torch_kind(name: str) -> str:
    low = name.lower()
    return _TORCH_KINDS.get(low, low)


def _side(obj: Any, what: str, framework_hint: str | None = None) -> _Side:
    fw = framework_of(obj)
    if fw is not None:
        ad = adapter_for(obj)
        if not ad.is_model(obj):
            raise TransferError(f"{what}: expected a model or a state dict, got a single tensor")
        return _side_from_model(obj)
    if isinstance(obj, Mapping):
        first = next(iter(obj.values()), None)
        return _side_from_state_dict(obj, framework_hint or (framework_of(first) if first is not None else None))
    raise TransferError(
        f"{what}: expected a torch.nn.Module, a paddle.nn.Layer or a state dict, got {type(obj).__module__}."
        f"{type(obj).__qualname__}"
    )


_FRAMEWORKS = ("torch", "paddle")


def _pair_sides(src: _Side, dst: _Side, mapping: MappingArg, src_framework: str | None = None) -> Pairing:
    """Pair two sides; ``src_framework`` says whose layout a bare state dict's entries are in."""
    if src_framework is not None:
        if src_framework not in _FRAMEWORKS:
            raise TransferError(f"src_framework: expected 'torch', 'paddle' or None, got {src_framework!r}")
        if src.framework is not None and src.framework != src_framework:
            what = "model" if src.model is not None else "state dict"
            raise TransferError(
                f"src_framework={src_framework!r}, but src is a {src.framework} {what}: leave "
                "src_framework out, or pass NumPy arrays"
            )
        src.framework = src_framework
    if src.framework is None:
        return _pair_unknown_framework(src, dst, mapping)
    return _build(src, dst, mapping)


def _pair_unknown_framework(src: _Side, dst: _Side, mapping: MappingArg) -> Pairing:
    """A state dict of NumPy arrays says nothing of the layout its entries are in.

    Both readings are tried: the other framework's layout (the layer rules apply: torch ``[out, in]``
    Linear weights into Paddle ``[in, out]``, ...) and the destination's own (entries copied by
    name). When only one reading sets every destination entry, it is used. When both do and they
    give the same values, the first is used. When both do and the values differ (a square Linear
    weight: transposed or not), nothing tells them apart: refuse, and ask for ``src_framework=``.
    When neither sets everything, the one setting more entries is used; with as many, only if
    they agree on every entry both set.
    """
    import dataclasses

    other = "torch" if dst.framework == "paddle" else "paddle"
    cross = _build(dataclasses.replace(src, framework=other), dst, mapping)
    same = _build(dataclasses.replace(src, framework=dst.framework), dst, mapping)
    cross_fits = cross.ok and _converts(cross)
    if not cross_fits and same.ok:
        return same
    if cross_fits and not same.ok:
        return cross
    if cross_fits:
        differ = _differences(cross, same)
        if not differ:
            return cross
    else:
        # Neither sets everything (strict=False, a partial checkpoint): the reading that sets more
        # entries is used, unless the other sets as many and they disagree where both set one.
        n_cross, n_same = len(cross.params), len(same.params)
        if not _converts(cross):
            return same
        differ = _differences(cross, same, common_only=True)
        if n_cross > n_same or not differ:
            return cross if n_cross >= n_same else same
    shown = ", ".join(differ[:6]) + (f" and {len(differ) - 6} more" if len(differ) > 6 else "")
    raise TransferError(
        f"src: a state dict of NumPy arrays does not say whether it is in {other}'s or {dst.framework}'s "
        f"layout, both readings fit, and they give different values for {shown} "
        f"(e.g. a square Linear weight, transposed or not); pass src_framework={other!r} or "
        f"src_framework={dst.framework!r}. Nothing was changed in dst"
    )


def _step_arrays(pairing: Pairing, st: _Step) -> dict[str, Any]:
    """destination full name -> the value one step would write (NumPy, destination layout)."""
    src, dst = pairing._src, pairing._dst
    assert src is not None and dst is not None
    if st.rule is not None and st.param_rule is None and (st.rule.to_paddle is not None or st.rule.to_torch is not None):
        cut = len(st.src_unit) + 1 if st.src_unit else 0
        arrays = {n[cut:]: _to_numpy(src.tensors[n]) for n in st.src_names}
        d_layer = dict(dst.layers).get(st.dst_unit)
        if pairing.dst == "paddle":
            out = st.rule.to_paddle(arrays, None, d_layer)
        else:
            out = st.rule.to_torch(arrays, d_layer, None)
        dcut = len(st.dst_unit) + 1 if st.dst_unit else 0
        return {n: out.get(n[dcut:]) for n in st.dst_names}
    arr = _to_numpy(src.tensors[st.src_names[0]])
    if st.param_rule is not None:
        arr = (st.param_rule.to_paddle if pairing.dst == "paddle" else st.param_rule.to_torch)(arr)
    return {st.dst_names[0]: arr}


def _converts(pairing: Pairing) -> bool:
    """False when a whole-layer conversion of the pairing fails (the entries are not its layout)."""
    for st in pairing._steps:
        if st.rule is not None and st.param_rule is None and st.rule.name_pairs is not None:
            try:
                _step_arrays(pairing, st)
            except (TransferError, ValueError, KeyError):
                return False
    return True


def _differences(a: Pairing, b: Pairing, common_only: bool = False) -> list[str]:
    """Destination entries the two pairings would set to different values (or ``a`` only sets)."""
    import numpy as np

    values: dict[str, Any] = {}
    for st in b._steps:
        values.update(_step_arrays(b, st))
    out = []
    for st in a._steps:
        for name, arr in _step_arrays(a, st).items():
            other = values.get(name)
            if other is None and common_only:
                continue
            if arr is None or other is None or arr.shape != other.shape or not np.array_equal(arr, other):
                out.append(name)
    return out


def pair(a: Any, b: Any, *, mapping: MappingArg = None, src_framework: str | None = None) -> Pairing:
    """Pair the layers and parameters of a Paddle model and a torch model (either order).

    ``mapping`` rewrites the names of ``a`` (the first argument) before matching: a dict of
    ``{regex: replacement}`` applied in order, or a callable ``name -> name | None``. ``a`` may also
    be a state dict (its names and tensors; the transforms then come from ``b``'s layer types
    and the framework of ``a``'s tensors, or ``src_framework`` for NumPy arrays: see ``transfer``).
    """
    fa, fb = framework_of(a), framework_of(b)
    if fb is None or not adapter_for(b).is_model(b):
        raise TransferError(
            f"b: expected a torch.nn.Module or a paddle.nn.Layer, got {type(b).__module__}.{type(b).__qualname__}"
        )
    if fa is not None and fa == fb:
        raise TransferError(f"a and b are both {fa} models; pair() needs one Paddle and one torch model")
    return _pair_sides(_side(a, "a"), _side(b, "b"), mapping, src_framework)
