"""``transfer``: copy weights between a PyTorch model and its Paddle port, by layer, exactly.

    report = transfer(torch_model, paddle_model)        # torch -> paddle, in place
    report = transfer(paddle_model, torch_model)        # and back
    report = transfer("pytorch_model.bin", paddle_model, mapping={r"^splinter\\.": "bert."})

The pairing (``_pairing.pair``) decides which source entry sets which destination parameter and
the layer types on both sides decide the layout transform (``rules.py``). Every copied value is
the source's bit for bit after that transform; the destination keeps its dtype (a change is
reported). With ``strict=True`` nothing in ``dst`` changes unless every destination parameter and
buffer can be set.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping, NamedTuple

from ._errors import TransferError
from ._pairing import MappingArg, Missing, Pairing, _pair_sides, _side, _table, _clip
from .adapters import adapter_for, framework_of, paddle_adapter, torch_adapter

__all__ = ["transfer", "TransferReport", "TransferError", "Copied"]

_LOG = logging.getLogger("paddlefix.align")


class Copied(NamedTuple):
    """One destination entry set by ``transfer``."""

    src: str
    """Source name (``a+b`` when several source entries feed one destination entry)."""
    dst: str
    how: str
    """``copy``, ``transpose``, ``rename``, ``split``, ``join``, ..."""
    dtype: str | None
    """``"float64 -> float32"`` when the value was cast to the destination's dtype, else None."""


class TransferReport:
    """What ``transfer`` did. Data first: :meth:`to_dict`; ``str()`` is a table (≤ 100 columns).

    Attributes:
        copied: every destination entry set, with its source and transform.
        unused: source entries nothing used (always listed: nothing is silent).
        missing: destination parameters / buffers not set, with the reason and candidates.
        tied: destination names that share one tensor with another layer's (set once).
        aliases: second names a layer gives its own parameters (a Paddle RNN layer's flat
            ``weight_ih_l0`` = ``0.cell.weight_ih``): set once, not tied weights.
        dropped: source entries the ``mapping`` dropped.
        src / dst: frameworks (``"torch"`` / ``"paddle"``); ``source``: what ``src`` was.
        pairing: the :class:`~paddlefix.align.Pairing` used.
    """

    def __init__(self, pairing: Pairing, copied: list[Copied], source: str) -> None:
        self.pairing = pairing
        self.copied = _per_entry(copied, pairing)
        self.unused = list(pairing.unused)
        self.missing: list[Missing] = list(pairing.missing)
        self.tied = list(pairing.tied)
        self.aliases = list(pairing.aliases)
        self.dropped = list(pairing.dropped)
        self.src = pairing.src
        self.dst = pairing.dst
        self.source = source

    @property
    def ok(self) -> bool:
        """True when every destination entry was set and no source entry was left over."""
        return not self.missing and not self.unused

    @property
    def dtype_changes(self) -> list[Copied]:
        """The copies that cast the value to the destination's dtype."""
        return [c for c in self.copied if c.dtype]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return {
            "ok": self.ok,
            "src": self.src,
            "dst": self.dst,
            "source": self.source,
            "copied": [c._asdict() for c in self.copied],
            "unused": list(self.unused),
            "missing": [{"name": m.name, "reason": m.reason, "candidates": list(m.candidates)} for m in self.missing],
            "tied": [list(t) for t in self.tied],
            "aliases": [list(t) for t in self.aliases],
            "dropped": list(self.dropped),
            "pairs": [p._asdict() for p in self.pairing.pairs],
        }

    def __str__(self) -> str:
        hows: dict[str, int] = {}
        for c in self.copied:
            hows[c.how] = hows.get(c.how, 0) + 1
        summary = ", ".join(f"{n} {h}" for h, n in sorted(hows.items()))
        lines = [
            f"transfer {self.src} -> {self.dst} ({self.source}): {len(self.copied)} set ({summary}), "
            f"{len(self.missing)} missing, {len(self.unused)} unused" + ("" if self.ok else "  [NOT OK]")
        ]
        rows = [(c.src, c.dst, c.how + (f" ({c.dtype})" if c.dtype else "")) for c in self.copied]
        lines += _table(("source", "destination", "how"), rows)
        for alias, canon in self.tied:
            lines.append(f"tied: {alias} = {canon}")
        if self.aliases:
            lines.append(f"{len(self.aliases)} aliases (second names of the same parameters, set once): "
                         + ", ".join(f"{a} = {c}" for a, c in self.aliases[:3]) + (" ..." if len(self.aliases) > 3 else ""))
        for m in self.missing:
            cand = f"; candidates: {', '.join(m.candidates)}" if m.candidates else ""
            lines.append(f"missing: {m.name}: {m.reason}{cand}")
        for n in self.unused:
            lines.append(f"unused: {n}")
        if self.dropped:
            lines.append(f"dropped by mapping: {', '.join(self.dropped)}")
        return "\n".join(_clip(line) for line in lines)

    __repr__ = __str__


def _per_entry(copied: list[Copied], pairing: Pairing) -> list[Copied]:
    """Each row with its own source entries and transform, from the rows of :attr:`Pairing.params`.

    A whole-layer rule (packed attention projections, recurrent weights) sets its destination
    entries in one step; its rows name the source entries each destination entry comes from
    (``in_proj_weight`` -> ``q_proj.weight``: ``split+transpose``), not every entry of the layer.
    Transform names are written from the source to the destination: Paddle ``q_proj.weight``,
    ``k_proj.weight``, ``v_proj.weight`` -> torch ``in_proj_weight`` is ``transpose+join``.
    """
    dst = pairing._dst
    if dst is None:
        return list(copied)
    to_paddle = pairing.dst == "paddle"
    sources: dict[str, list[str]] = {}
    hows: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for paddle_name, torch_name, how_, _ in pairing._rows:  # Pairing.params without the layer index
        d, s = (paddle_name, torch_name) if to_paddle else (torch_name, paddle_name)
        key = dst.canonical(d)
        names.setdefault(key, d)  # a Paddle RNN's cell name, not its flat alias (which can mislead)
        parts = how_.split("+")
        if not to_paddle:  # the rules name the torch -> Paddle transform: read it backwards
            parts = ["join" if x == "split" else "split" if x == "join" else x for x in reversed(parts)]
        how = "+".join(parts)
        if s not in sources.setdefault(key, []):
            sources[key].append(s)
        if how not in hows.setdefault(key, []):
            hows[key].append(how)
    layered = {n for st in pairing._steps if st.rule is not None and st.rule.name_pairs is not None for n in st.dst_names}
    out = []
    for c in copied:
        key = dst.canonical(c.dst)
        if key in sources:
            c = c._replace(src="+".join(sources[key]), dst=names[key], how="/".join(hows[key]))
        elif key in layered:
            # set by a whole-layer rule from no source entry (the zero biases a bias-free torch
            # RNN gives its Paddle counterpart): say so, from the value written
            value = _as_numpy(dst.tensors[key])[0]
            cell = {canon: alias for alias, canon in pairing.aliases}.get(key, c.dst)
            c = c._replace(src="-", dst=cell, how="zeros" if not value.any() else "set by rule, no source entry")
        out.append(c)
    return out


def _describe_source(src: Any) -> str:
    if isinstance(src, (str, os.PathLike)):
        return os.path.basename(os.fspath(src))
    if isinstance(src, Mapping):
        return "state dict"
    return type(src).__name__


def _local(full: str, unit: str) -> str:
    return full[len(unit) + 1 :] if unit else full


def transfer(
    src: Any, dst: Any, *, mapping: MappingArg = None, strict: bool = True, src_framework: str | None = None
) -> TransferReport:
    """Copy the weights of ``src`` into ``dst`` (in place), by layer, with the right layout.

    Args:
        src: a ``torch.nn.Module``, a ``paddle.nn.Layer``, a state dict (names to torch / Paddle
            tensors or NumPy arrays), or a checkpoint path (``.bin`` / ``.pt`` / ``.pth`` read
            with torch's weights-only loading, ``.safetensors``, ``.pdparams``). From a state dict
            the transforms come from ``dst``'s layer types and the framework the entries come
            from: their tensors' type (torch / Paddle), the file type (``.pdparams``: Paddle; the
            others: torch), or ``src_framework``. A dict of NumPy arrays does not say: when both
            readings (the other framework's layout, and ``dst``'s own) set every entry but give
            different values (a square Linear weight, transposed or not), :class:`TransferError`
            asks for ``src_framework``; nothing is guessed.
        dst: a ``torch.nn.Module`` or ``paddle.nn.Layer``; the direction follows from the types.
        mapping: rewrites source names before matching: ``{regex: replacement}`` applied in order
            (a ``None`` replacement drops the entry), or a callable ``name -> name | None``.
        strict: when True (default) raise :class:`TransferError` and change nothing in ``dst`` if
            any destination parameter or buffer would be left unset; when False copy what pairs.
        src_framework: ``"torch"`` or ``"paddle"``: the layout of a state dict's or checkpoint's
            entries, when their type does not say it (NumPy arrays). None (default): from the type.

    Returns:
        A :class:`TransferReport` (``copied``, ``unused``, ``missing``, ``ok``).
    """
    if framework_of(dst) is None or not adapter_for(dst).is_model(dst):
        raise TransferError(
            f"dst: expected a torch.nn.Module or a paddle.nn.Layer to copy into, got "
            f"{type(dst).__module__}.{type(dst).__qualname__}"
        )
    if not isinstance(strict, bool):
        raise TransferError(f"strict: expected True or False, got {strict!r}")
    hint: str | None = None
    if isinstance(src, (str, os.PathLike)):
        from ._checkpoint import load_checkpoint

        state, hint = load_checkpoint(src)
        src_side = _side(state, "src", src_framework or hint)
    else:
        src_side = _side(src, "src")
    dst_side = _side(dst, "dst")
    pairing = _pair_sides(src_side, dst_side, mapping, src_framework)
    if pairing.conflicts:
        raise TransferError("mapping: " + "; ".join(pairing.conflicts) + "; nothing was changed in dst")
    if strict and pairing.missing:
        raise TransferError(_missing_message(pairing))

    dst_ad = adapter_for(dst)
    # Validate the layer-level conversions (shapes) before anything in dst changes.
    converted: dict[int, dict[str, Any]] = {}
    problems: list[str] = []
    for i, st in enumerate(pairing._steps):
        if st.rule is None or st.param_rule is not None or (st.rule.to_paddle is None and st.rule.to_torch is None):
            continue
        out = _convert_layer(pairing, st)
        for full in st.dst_names:
            local = _local(full, st.dst_unit)
            if local not in out:
                problems.append(f"{full}: rule {st.rule.name!r} produced no {local!r}")
            elif tuple(out[local].shape) != dst_side.shape(full):
                problems.append(f"{full}: shape {dst_side.shape(full)} but rule {st.rule.name!r} gives {tuple(out[local].shape)}")
        converted[i] = out
    if problems:
        if strict:
            raise TransferError("transfer: shapes cannot be reconciled; nothing was changed in dst:\n  - " + "\n  - ".join(problems))
        for p in problems:
            pairing.missing.append(Missing(p.split(":", 1)[0], p.split(": ", 1)[1], ()))

    bad = {m.name for m in pairing.missing}
    copied: list[Copied] = []
    with dst_ad.batched():  # copies overlap each other and the loop; all done when it ends
        _copy_steps(pairing, src_side, dst_side, dst_ad, converted, bad, copied)
    report = TransferReport(pairing, copied, _describe_source(src))
    _warn_unruled(pairing)
    _LOG.info("transfer: %d set, %d missing, %d unused", len(copied), len(report.missing), len(report.unused))
    return report


def _copy_steps(pairing: Pairing, src_side: Any, dst_side: Any, dst_ad: Any, converted: dict[int, dict[str, Any]],
                bad: set[str], copied: list[Copied]) -> None:
    import numpy as np

    for i, st in enumerate(pairing._steps):
        if i in converted:
            out = converted.pop(i)
            for full in st.dst_names:
                if full in bad:
                    continue
                copied.append(_assign(dst_ad, dst_side.tensors[full], out[_local(full, st.dst_unit)], "+".join(st.src_names), full, st.how))
            continue
        sname, full = st.src_names[0], st.dst_names[0]
        if full in bad:
            continue
        value = src_side.tensors[sname]
        arr, borrowed = _as_numpy(value, share=pairing.dst == "torch")
        if st.param_rule is not None:
            fn = st.param_rule.to_paddle if pairing.dst == "paddle" else st.param_rule.to_torch
            new = fn(arr)
            borrowed = borrowed and np.may_share_memory(new, arr)  # a view (a transpose) still borrows
            arr = new
        copied.append(_assign(dst_ad, dst_side.tensors[full], arr, sname, full, st.how, temporary=not borrowed))
        del arr


def _warn_unruled(pairing: Pairing) -> None:
    """Warn when matrices were copied as they are between layers no rule knows (layout unchecked)."""
    if pairing.src == pairing.dst or pairing._dst is None:
        return
    layers = sorted({
        st.dst_unit or "<root>"
        for st in pairing._steps
        if st.rule is None and any(len(pairing._dst.shape(n)) >= 2 for n in st.dst_names)
    })
    if layers:
        import warnings

        from .._errors import PaddlefixWarning

        shown = ", ".join(layers[:8]) + (f" and {len(layers) - 8} more" if len(layers) > 8 else "")
        warnings.warn(
            f"align.transfer: no layer rule for {shown}: their matrices were copied by name without a "
            "layout transform; check that both frameworks store them the same way",
            PaddlefixWarning,
            stacklevel=3,
        )


def _as_numpy(value: Any, share: bool = False) -> tuple[Any, bool]:
    """(``value`` as a NumPy array, whether that array borrows ``value``'s memory).

    A torch CPU tensor is always read in place; with ``share``, a Paddle CPU tensor too. ``share``
    is only for copies into a torch model: the array then aliases the source, which nothing in
    ``transfer`` writes to. A borrowed array costs no memory while its copy waits (``batched``).
    """
    import numpy as np

    fw = framework_of(value)
    if fw is None:
        return np.asarray(value), isinstance(value, np.ndarray)
    ad = torch_adapter() if fw == "torch" else paddle_adapter()
    if fw == "torch" or share:
        view = ad.numpy_view(value)
        if view is not None:
            return view, True
    return ad.to_numpy(value), False


_NUMPY_NAMES: dict[Any, str] = {}
"""NumPy dtype -> its name (``str(dtype)`` runs Python code in NumPy each time)."""


def _dtype_str(dtype: Any) -> str:
    name = _NUMPY_NAMES.get(dtype)
    if name is None:
        name = _NUMPY_NAMES[dtype] = str(dtype)
    return name


def _assign(ad: Any, tensor: Any, arr: Any, sname: str, dname: str, how: str, temporary: bool = True) -> Copied:
    src_dtype = _dtype_str(arr.dtype)
    dst_dtype = ad.dtype_name(tensor)
    ad.assign(tensor, arr, temporary=temporary)
    change = None if src_dtype == dst_dtype else f"{src_dtype} -> {dst_dtype}"
    return Copied(sname, dname, how, change)


def _convert_layer(pairing: Pairing, st: Any) -> dict[str, Any]:
    src_side, dst_side = pairing._src, pairing._dst
    assert src_side is not None and dst_side is not None
    share = pairing.dst == "torch"
    arrays = {_local(n, st.src_unit): _as_numpy(src_side.tensors[n], share)[0] for n in st.src_names}
    s_unit = src_side.units.get(st.src_unit)
    s_layer = s_unit.layer if s_unit is not None else None
    d_layer = dict(dst_side.layers).get(st.dst_unit)
    s_layer = dict(src_side.layers).get(st.src_unit, s_layer) if src_side.layers else s_layer
    if pairing.dst == "paddle":
        if st.rule.to_paddle is None:
            raise TransferError(f"rule {st.rule.name!r} cannot convert torch -> paddle")
        return dict(st.rule.to_paddle(arrays, s_layer, d_layer))
    if st.rule.to_torch is None:
        raise TransferError(f"rule {st.rule.name!r} cannot convert paddle -> torch")
    return dict(st.rule.to_torch(arrays, d_layer, s_layer))


def _missing_message(pairing: Pairing) -> str:
    lines = [f"transfer: {len(pairing.missing)} destination entries would be left unset; nothing was changed in dst:"]
    for m in pairing.missing:
        cand = f"; candidates: {', '.join(m.candidates)}" if m.candidates else "; no candidates"
        lines.append(f"  - {m.name}: {m.reason}{cand}")
    if pairing.unused:
        lines.append("unused source entries: " + ", ".join(pairing.unused[:20]) + (" ..." if len(pairing.unused) > 20 else ""))
    lines.append("pass mapping= to rename source entries, or strict=False to copy what pairs")
    return "\n".join(lines)
