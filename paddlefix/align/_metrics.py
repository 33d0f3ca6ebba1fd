"""Per-tensor metrics and tolerances for ``align.compare`` (NumPy only, framework-neutral).

**Tolerance.** A tensor passes only if *every* element passes, as ``torch.testing.assert_close``:
``|actual - expected| <= atol + rtol * |expected|``. The tolerance is one of

- ``None`` (default): per dtype, the defaults of ``torch.testing.assert_close``:
  float64 ``(1e-7, 1e-7)``, float32 ``(1.3e-6, 1e-5)``, float16 ``(1e-3, 1e-5)``, bfloat16
  ``(1.6e-2, 1e-5)`` (complex as their float parts); integers and bool exact ``(0, 0)``.
- ``(rtol, atol)``: two non-negative numbers for every floating tensor (integers stay exact).
- ``"reprod"``: Paddle's reproduction guide, mean ``|diff| <= 1e-6`` **and** every element within
  the dtype default above. The guide's mean alone lets a tensor with its hidden dimension reversed
  pass (its mean error can be tiny); here the mean is an extra condition, never a substitute.

**NaN / Inf.** NaN in both tensors at the same position counts as equal, and so does an infinity
of the same sign in both (``equal_nan=True``): compare measures agreement between the two
frameworks, not the health of the model. The counts are kept (:attr:`Metrics.nan`,
:attr:`Metrics.inf`) and shown, so a NaN in both is never invisible. NaN against a number, or an
infinity against anything else, is an element out of tolerance with an infinite difference.

**Shapes and dtypes.** Shapes that differ only by size-1 dimensions (``[]`` vs ``[1]``, a loss
of shape ``[1]`` in older Paddle) are compared value by value and the difference is noted; so are
shapes where one is the other broadcast (``[1, S, H]`` vs ``[B, S, H]``: position embeddings
expanded on one side), compared broadcast; for *gradients* the broadcast side's gradient is first
summed over the broadcast dimensions (that is the other side's gradient). Other shape differences
fail without values. Different dtypes fail (``float32`` vs ``float64``
is a port difference), with the values still compared at the looser dtype's tolerance.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import AlignError

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "DEFAULT_TOLERANCES",
    "REPROD_MEAN",
    "Tolerance",
    "Metrics",
    "resolve_tolerance",
    "tensor_metrics",
    "dtype_name",
]

#: Per-dtype ``(rtol, atol)``, as ``torch.testing.assert_close``.
DEFAULT_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-7, 1e-7),
    "float32": (1.3e-6, 1e-5),
    "float16": (1e-3, 1e-5),
    "bfloat16": (1.6e-2, 1e-5),
    "complex128": (1e-7, 1e-7),
    "complex64": (1.3e-6, 1e-5),
}
#: The reproduction guide's threshold on the mean absolute difference (preset ``"reprod"``).
REPROD_MEAN = 1e-6
_PRESETS = ("reprod",)
# Looser first: the tolerance used when the two dtypes differ.
_LOOSENESS = ["bfloat16", "float16", "float32", "complex64", "float64", "complex128"]


class Tolerance(NamedTuple):
    """The tolerance one tensor is judged with."""

    rtol: float
    atol: float
    mean_atol: float | None = None
    """Extra bound on the mean absolute difference (``"reprod"``: 1e-6), else None."""
    source: str = "default"
    """``"default"`` (per dtype), ``"user"`` (``(rtol, atol)``) or ``"reprod"``."""


def dtype_name(array: Any) -> str:
    """NumPy's dtype name (``ml_dtypes.bfloat16`` is ``"bfloat16"``)."""
    return str(getattr(getattr(array, "dtype", None), "name", type(array).__name__))


def _is_float(name: str) -> bool:
    return name in DEFAULT_TOLERANCES


def resolve_tolerance(tolerance: Any, dtype: str) -> Tolerance:
    """The :class:`Tolerance` for a tensor of ``dtype`` under the user's ``tolerance``.

    ``tolerance``: ``None``, ``"reprod"`` or ``(rtol, atol)``; ``dtype``: a NumPy dtype name.
    Integer and bool tensors are always compared exactly.

    Raises:
        AlignError: ``tolerance`` is none of the accepted forms.
    """
    check_tolerance(tolerance)
    floating = _is_float(dtype)
    default = DEFAULT_TOLERANCES.get(dtype, (0.0, 0.0))
    if tolerance is None:
        return Tolerance(*default, None, "default")
    if isinstance(tolerance, str):
        return Tolerance(*default, REPROD_MEAN if floating else None, "reprod")
    if not floating:
        return Tolerance(0.0, 0.0, None, "user")
    return Tolerance(float(tolerance[0]), float(tolerance[1]), None, "user")


def check_tolerance(tolerance: Any) -> None:
    """Raise :class:`AlignError` unless ``tolerance`` is ``None``, ``"reprod"`` or ``(rtol, atol)``."""
    if tolerance is None:
        return
    if isinstance(tolerance, str):
        if tolerance in _PRESETS:
            return
        raise AlignError(
            f"tolerance: unknown preset {tolerance!r}; accepted: None (per-dtype defaults), "
            f"{', '.join(map(repr, _PRESETS))} or (rtol, atol)"
        )
    ok = isinstance(tolerance, (tuple, list)) and len(tolerance) == 2
    if ok:
        for v in tolerance:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                ok = False
    if not ok:
        raise AlignError(
            f"tolerance: invalid value {tolerance!r}; accepted: None (per-dtype defaults), 'reprod', "
            "or a pair (rtol, atol) of finite non-negative numbers"
        )


@dataclass
class Metrics:
    """How one tensor (``actual``, the Paddle side) differs from the reference (``expected``, torch)."""

    shape: list[int]
    expected_shape: list[int]
    dtype: str
    expected_dtype: str
    numel: int
    rtol: float
    atol: float
    mean_atol: float | None = None
    ok: bool = True
    problem: str | None = None
    """Why the tensor fails apart from its values (shape, dtype), or None."""
    note: str | None = None
    """Something worth knowing that is not a failure (size-1 dims differ, NaN in both, ...)."""
    max_abs: float = 0.0
    max_rel: float = 0.0
    """Greatest ``|a - e| / |e|`` over elements (as assert_close; inf where ``e == 0`` and ``a != e``)."""
    scale_rel: float = 0.0
    """Greatest absolute difference divided by the reference's greatest magnitude (0 if both are 0)."""
    mean_abs: float = 0.0
    cosine: float | None = None
    """Cosine similarity of the flattened tensors (None for integer tensors or a zero norm)."""
    mismatched: int = 0
    """Elements out of tolerance."""
    worst_index: list[int] | None = None
    """Index of the element farthest out of tolerance (largest ``|a-e| - atol - rtol |e|``)."""
    worst_actual: float | None = None
    worst_expected: float | None = None
    expected_max: float = 0.0
    """Greatest finite ``|expected|``: the reference's magnitude."""
    nan: int = 0
    """Positions NaN in both (counted as equal)."""
    inf: int = 0
    """Positions with the same infinity in both (counted as equal)."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction_out(self) -> float:
        """Fraction of elements out of tolerance (1.0 for a shape mismatch)."""
        if self.problem and self.problem.startswith("shape"):
            return 1.0
        return self.mismatched / self.numel if self.numel else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fraction_out"] = self.fraction_out
        return {k: _json_float(v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Metrics":
        names = set(cls.__dataclass_fields__)
        return cls(**{k: _unjson_float(v) for k, v in d.items() if k in names})

    def message(self, name: str = "Tensors") -> str:
        """An ``assert_close``-style explanation (empty when the tensor passes)."""
        if self.ok:
            return ""
        lines = [f"{name} are not close!", ""]
        if self.problem:
            lines.append(self.problem[0].upper() + self.problem[1:] + ".")
        if self.problem is None or not self.problem.startswith("shape"):
            pct = 100.0 * self.fraction_out
            lines.append(f"Mismatched elements: {self.mismatched} / {self.numel} ({pct:.1f}%)")
            where = f" at index {tuple(self.worst_index)}" if self.worst_index is not None else ""
            lines.append(
                f"Greatest absolute difference: {_fmt(self.max_abs)}{where} (up to {self.atol:g} allowed)"
            )
            lines.append(f"Greatest relative difference: {_fmt(self.max_rel)} (up to {self.rtol:g} allowed)")
            if self.worst_index is not None:
                lines.append(
                    f"Worst element: actual {_fmt(self.worst_actual)}, expected {_fmt(self.worst_expected)}"
                )
            if self.mean_atol is not None:
                lines.append(f"Mean absolute difference: {_fmt(self.mean_abs)} (up to {self.mean_atol:g} allowed)")
        if self.note:
            lines.append(f"Note: {self.note}.")
        return "\n".join(lines)


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.4g}"


def _json_float(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)  # 'inf', 'nan': JSON has neither
    return v


def _unjson_float(v: Any) -> Any:
    if v in ("inf", "-inf", "nan"):
        return float(v)
    return v


def _looser(a: str, b: str) -> str:
    ia = _LOOSENESS.index(a) if a in _LOOSENESS else len(_LOOSENESS)
    ib = _LOOSENESS.index(b) if b in _LOOSENESS else len(_LOOSENESS)
    return a if ia <= ib else b


def _as_numeric(array: "np.ndarray") -> "np.ndarray":
    import numpy as np

    a = np.asarray(array)
    if a.dtype.name == "bfloat16":  # ml_dtypes
        return a.astype(np.float32)
    return a


def tensor_metrics(actual: Any, expected: Any, rtol: float | None = None, atol: float | None = None,
                   *, tolerance: Any = None) -> Metrics:
    """Compare ``actual`` (Paddle) with ``expected`` (torch, the reference), elementwise.

    ``rtol`` / ``atol`` given: used as they are (integers stay exact). Otherwise ``tolerance``
    (``None``, ``"reprod"`` or ``(rtol, atol)``) is resolved for the dtype (see module docs).
    """
    import numpy as np

    m, a, e, tol, notes, done = prepare_metrics(actual, expected, tolerance=tolerance, rtol=rtol, atol=atol)
    if done:
        return m
    acc = _Acc(tol)
    # In blocks: a float64 copy of a whole embedding matrix per temporary would cost gigabytes, and a
    # transposed view (a Linear weight in the other layout) is copied one block at a time.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # once, not per block
        for _pos, at, (ca, ce) in iter_blocks((a, e), work_dtype(a, e)):
            acc.add(ca, ce, at)
    return finish_metrics(m, acc, a, e, notes)


def prepare_metrics(actual: Any, expected: Any, *, tolerance: Any = None, rtol: float | None = None,
                    atol: float | None = None) -> tuple[Metrics, Any, Any, Tolerance, list[str], bool]:
    """The first half of :func:`tensor_metrics`: ``(metrics, a, e, tolerance, notes, done)``, where ``a`` /
    ``e`` are the arrays (or views) to compare elementwise, same shape, and ``done`` says the metrics are
    final already (shape mismatch, empty tensor). Feed blocks of ``a`` / ``e`` to an :class:`_Acc`, then
    call :func:`finish_metrics`."""
    import numpy as np

    a = _as_numeric(actual)
    e = _as_numeric(expected)
    da, de = dtype_name(actual), dtype_name(expected)
    judged = da if da == de else _looser(da, de)
    if rtol is not None or atol is not None:
        floating = _is_float(judged)
        tol = Tolerance(float(rtol or 0.0) if floating else 0.0, float(atol or 0.0) if floating else 0.0,
                        None, "user")
    else:
        tol = resolve_tolerance(tolerance, judged)
    m = Metrics(
        shape=list(a.shape), expected_shape=list(e.shape), dtype=da, expected_dtype=de,
        numel=int(e.size), rtol=tol.rtol, atol=tol.atol, mean_atol=tol.mean_atol,
    )
    notes: list[str] = []
    if a.shape != e.shape:
        squeezed = tuple(d for d in a.shape if d != 1) == tuple(d for d in e.shape if d != 1)
        if squeezed and a.size == e.size:
            notes.append(f"shapes differ by size-1 dimensions: {list(a.shape)} vs {list(e.shape)}")
            a = a.reshape(e.shape)
        elif _broadcasts(a.shape, e.shape):
            # e.g. position embeddings of shape [1, S, H] on one side, expanded to [B, S, H] on the other
            notes.append(f"shapes differ by broadcasting: {list(a.shape)} vs {list(e.shape)}; compared broadcast")
            a, e = (np.ascontiguousarray(x) for x in np.broadcast_arrays(a, e))
            m.numel = int(e.size)
        else:
            m.ok = False
            m.problem = f"shape mismatch: {list(a.shape)} vs {list(e.shape)} (reference)"
            m.numel = int(max(a.size, e.size))
            return m, a, e, tol, notes, True
    if da != de:
        m.ok = False
        m.problem = f"dtype mismatch: {da} vs {de} (reference)"
    if e.size == 0:
        m.note = "; ".join(notes) or None
        return m, a, e, tol, notes, True
    return m, a, e, tol, notes, False


def finish_metrics(m: Metrics, acc: "_Acc", a: Any, e: Any, notes: list[str]) -> Metrics:
    """The second half of :func:`tensor_metrics`: ``m`` filled from the statistics ``acc`` gathered."""
    import numpy as np

    tol = acc.tol
    m.mismatched, m.nan, m.inf = acc.mismatched, acc.nan, acc.inf
    if m.nan:
        notes.append(f"NaN in both at {m.nan} element(s), counted as equal")
    if m.inf:
        notes.append(f"the same infinity in both at {m.inf} element(s), counted as equal")
    m.max_abs, m.max_rel, m.expected_max = acc.max_abs, acc.max_rel, acc.mag_max
    m.mean_abs = acc.sum_abs / e.size if math.isfinite(acc.sum_abs) else math.inf
    if m.expected_max > 0:
        m.scale_rel = m.max_abs / m.expected_max
    elif m.max_abs > 0:
        m.scale_rel = math.inf
    if e.dtype.kind == "f" and acc.all_comparable and acc.na > 0 and acc.ne > 0:
        m.cosine = acc.cosine()
    flat = acc.worst_excess_at if m.mismatched else acc.max_abs_at
    if m.mismatched or m.max_abs > 0:
        idx = np.unravel_index(flat, e.shape)
        m.worst_index = [int(i) for i in idx]
        m.worst_actual = _scalar(a[idx])
        m.worst_expected = _scalar(e[idx])
    if m.mismatched:
        m.ok = False
    if tol.mean_atol is not None and m.mean_abs > tol.mean_atol:
        m.ok = False
        if m.problem is None and not m.mismatched:
            m.problem = f"mean absolute difference {m.mean_abs:.4g} above {tol.mean_atol:g} (reprod)"
    m.note = "; ".join(notes) or None
    return m


# The blocked checks run under numpy.errstate(divide / invalid / over = "ignore") (0 / 0 and
# inf - inf are handled by value), set once around a whole loop, not per block.

#: Elements per block of the elementwise checks: small enough that a block's temporaries stay in the
#: CPU caches, large enough that NumPy's per-call overhead does not count.
_CHUNK = 1 << 16


def iter_blocks(arrays: Any, dtype: Any, chunk: int = _CHUNK) -> Any:
    """Yield ``(pos, at, [flat block of each array in dtype])`` over arrays of one shape
    (``dtype=None``: each array's own). ``pos`` counts the elements yielded before (the same order at
    every call for the same shapes and layouts); ``at`` is the flat C-order index of the block's first
    element (an int), or, for tiles, a callable mapping an index in the block to the flat index.

    Contiguous arrays are sliced in C order (no copy unless the dtype differs). When a 2-D array is a
    non-contiguous view (a transposed Linear weight) all are read in square tiles, each copied on its
    own (fast: a tile stays in the CPU cache), never the whole array."""
    import numpy as np

    arrays = [np.asarray(x) for x in arrays]
    shape = arrays[0].shape
    if len(shape) <= 1 or all(x.flags.c_contiguous for x in arrays):
        flats = [x.reshape(-1) for x in arrays]
        n = flats[0].size
        for lo in range(0, n, chunk):
            yield lo, lo, [f[lo:lo + chunk] if dtype is None else f[lo:lo + chunk].astype(dtype, copy=False)
                           for f in flats]
        return
    if len(shape) == 2:
        rows, cols = int(shape[0]), int(shape[1])
        side = max(1, int(math.isqrt(chunk)))
        tr = side if cols >= side else max(1, chunk // max(cols, 1))
        tc = min(cols, side) if cols >= side else cols
        pos = 0
        for r0 in range(0, rows, tr):
            for c0 in range(0, cols, tc):
                blocks = [np.ascontiguousarray(x[r0:r0 + tr, c0:c0 + tc], dtype=dtype) for x in arrays]
                width = blocks[0].shape[1]
                yield pos, _TileAt(r0, c0, width, cols), [blk.reshape(-1) for blk in blocks]
                pos += blocks[0].size
        return
    row = 1
    for d in shape[1:]:
        row *= int(d)
    if row == 0:
        return
    per = max(1, chunk // row)
    for r0 in range(0, shape[0], per):
        yield r0 * row, r0 * row, [np.ascontiguousarray(x[r0:r0 + per], dtype=dtype).reshape(-1) for x in arrays]


class _TileAt:
    """Flat C-order index of element ``k`` of a tile starting at ``(r0, c0)``, ``width`` wide, of a
    2-D array ``cols`` wide."""

    __slots__ = ("r0", "c0", "width", "cols")

    def __init__(self, r0: int, c0: int, width: int, cols: int) -> None:
        self.r0, self.c0, self.width, self.cols = r0, c0, width, cols

    def __call__(self, k: int) -> int:
        return (self.r0 + k // self.width) * self.cols + self.c0 + k % self.width


def _at(offset: Any, k: int) -> int:
    return offset + k if isinstance(offset, int) else offset(k)


def work_dtype(*arrays: Any) -> Any:
    """The dtype the elementwise checks compute in: float32 for float16 / bfloat16 / float32 tensors
    (as ``torch.isclose`` does in their own precision; the difference of two close float32 values is
    exact), float64 for float64 and integers (int64 ids beyond 2**24 stay exact), complex128 for complex."""
    import numpy as np

    kinds = {x.dtype.kind for x in arrays}
    if "c" in kinds:
        return np.complex128
    if all(x.dtype.kind == "f" and x.dtype.itemsize <= 4 for x in arrays):
        return np.float32
    return np.float64


class _Acc:
    """Running statistics over the blocks of one comparison (see :meth:`add`)."""

    def __init__(self, tol: Tolerance) -> None:
        self.tol = tol
        self.mismatched = self.nan = self.inf = 0
        self.max_abs = self.max_rel = self.mag_max = self.sum_abs = 0.0
        self.max_abs_at = self.worst_excess_at = 0
        self.worst_excess = -math.inf
        # cosine from |a|^2, |e|^2 and |a - e|^2: dot = (|a|^2 + |e|^2 - |a - e|^2) / 2. Where a ~ e the
        # rounding of the two norms cancels to first order, so float32 block sums are exact enough
        self.na = self.ne = self.dd = 0.0
        self.all_comparable = True

    # Ties go to the smallest flat index, as one argmax over the whole tensor in C order (blocks in
    # tile order would otherwise pick another of several equal differences).
    def _max(self, v: float, offset: Any, k: int) -> None:
        if v > self.max_abs or (v == self.max_abs and v > 0 and _at(offset, k) < self.max_abs_at):
            self.max_abs, self.max_abs_at = v, _at(offset, k)

    def _worst(self, v: float, offset: Any, k: int) -> None:
        if v > self.worst_excess or (v == self.worst_excess and _at(offset, k) < self.worst_excess_at):
            self.worst_excess, self.worst_excess_at = v, _at(offset, k)

    def cosine(self) -> float:
        dot = 0.5 * ((self.na + self.ne) - self.dd)
        return float(min(1.0, max(-1.0, dot / math.sqrt(self.na * self.ne))))

    def add(self, a: Any, e: Any, offset: Any) -> Any:
        """Fold one block (flat ``a`` / ``e`` in the work dtype, at ``offset``: see :func:`iter_blocks`) into the
        statistics (call it under ``numpy.errstate`` ignoring divide / invalid / over). Returns ``|a - e|`` of the block (float, with ``inf`` where a NaN / infinity is not
        matched and 0 where it is) and whether the block was all finite."""
        import numpy as np

        tol = self.tol
        diff = np.subtract(a, e)
        diff = np.abs(diff, out=diff) if diff.dtype.kind == "f" else np.abs(diff)
        mag = np.abs(e)
        k = int(np.argmax(diff))
        dk = float(diff[k])
        mag_max = float(mag.max())
        if not (math.isfinite(dk) and math.isfinite(mag_max)):
            return self._add_special(a, e, offset), False
        # the usual case: every element of both finite
        excess = np.multiply(mag, tol.rtol)
        np.subtract(diff, excess, out=excess)
        excess -= tol.atol
        self.mismatched += int(np.count_nonzero(excess > 0))
        j = int(np.argmax(excess))
        self._worst(float(excess[j]), offset, j)
        self._max(dk, offset, k)
        if dk > 0:
            ratio = np.divide(diff, mag, out=excess)
            rmax = float(np.fmax.reduce(ratio))  # 0 / 0 (equal zeros) is NaN: ignored
            if rmax == rmax:
                self.max_rel = max(self.max_rel, rmax)
        self.mag_max = max(self.mag_max, mag_max)
        self.sum_abs += float(diff.sum(dtype=np.float64))
        if a.dtype.kind == "f":
            na, ne, dd = float(np.dot(a, a)), float(np.dot(e, e)), float(np.dot(diff, diff))
            if not (math.isfinite(na) and math.isfinite(ne) and math.isfinite(dd)):  # float32 overflow
                a64, e64 = a.astype(np.float64), e.astype(np.float64)
                na, ne = float(np.dot(a64, a64)), float(np.dot(e64, e64))
                dd = float(np.dot(a64 - e64, a64 - e64))
            self.na += na
            self.ne += ne
            self.dd += dd
        return diff, True

    def _add_special(self, a64: Any, e64: Any, offset: Any) -> Any:
        """A block holding NaN or infinities: NaN in both / the same infinity in both count as equal."""
        import numpy as np

        tol = self.tol
        finite_a, finite_e = np.isfinite(a64), np.isfinite(e64)
        both_nan = np.isnan(a64) & np.isnan(e64)
        same_inf = np.isinf(a64) & np.isinf(e64) & (a64 == e64)
        equal_special = both_nan | same_inf
        finite = finite_a & finite_e
        with np.errstate(invalid="ignore", over="ignore"):
            diff = np.where(finite, np.abs(a64 - e64), np.inf)
        diff[equal_special] = 0.0
        mag = np.abs(np.where(finite_e, e64, 0.0))
        self.nan += int(np.count_nonzero(both_nan))
        self.inf += int(np.count_nonzero(same_inf))
        if not np.all(finite | equal_special):
            self.all_comparable = False
        excess = diff - tol.rtol * mag
        excess -= tol.atol
        self.mismatched += int(np.count_nonzero(excess > 0))
        k = int(np.argmax(diff))
        self._max(float(diff[k]), offset, k)
        nz = diff > 0
        if nz.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                self.max_rel = max(self.max_rel, float(np.max(diff[nz] / mag[nz])))
        self.mag_max = max(self.mag_max, float(mag.max()))
        self.sum_abs += float(diff.sum(dtype=np.float64))
        k = int(np.argmax(excess))
        self._worst(float(excess[k]), offset, k)
        if a64.dtype.kind == "f":
            fa = np.where(finite, a64, 0.0).astype(np.float64, copy=False)
            fe = np.where(finite, e64, 0.0).astype(np.float64, copy=False)
            self.na += float(np.dot(fa, fa))
            self.ne += float(np.dot(fe, fe))
            self.dd += float(np.dot(fa - fe, fa - fe))
        return diff


def _broadcasts(a: tuple, b: tuple) -> bool:
    """Whether one shape is the other broadcast (same rank, every differing dimension 1 on one side)."""
    if len(a) != len(b):
        return False
    big = tuple(max(x, y) for x, y in zip(a, b))
    return all(x == y or x == 1 or y == 1 for x, y in zip(a, b)) and big in (a, b)


def reduce_broadcast(grad: Any, shape: tuple) -> Any:
    """``grad`` summed over the dimensions where ``shape`` has 1 (the gradient of a broadcast tensor)."""
    import numpy as np

    g = np.asarray(grad)
    if g.shape == tuple(shape) or not _broadcasts(g.shape, tuple(shape)) or g.ndim != len(shape):
        return g
    axes = tuple(i for i, (x, y) in enumerate(zip(g.shape, shape)) if y == 1 and x != 1)
    if not axes or tuple(max(x, y) for x, y in zip(g.shape, shape)) != g.shape:
        return g
    return g.astype(np.float64).sum(axis=axes, keepdims=True).astype(g.dtype)


def _scalar(v: Any) -> float:
    return float(v.real) if isinstance(v, complex) or bool(getattr(v, "imag", False)) else float(v)


def missing_metrics(present: Any, side: str) -> Metrics:
    """Metrics for a tensor that exists on one side only (``side`` names the side that lacks it)."""
    shape = list(getattr(present, "shape", []))
    dt = dtype_name(present)
    return Metrics(shape=shape if side == "torch" else [], expected_shape=shape if side == "paddle" else [],
                   dtype=dt if side == "torch" else "-", expected_dtype=dt if side == "paddle" else "-",
                   numel=int(getattr(present, "size", 0)), rtol=0.0, atol=0.0, ok=False,
                   problem=f"no tensor on the {side} side")
