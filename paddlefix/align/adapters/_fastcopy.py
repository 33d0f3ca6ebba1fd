"""Copies between CPU tensors at memory speed: a vectorised transpose, and copies run in parallel.

torch's ``dst.copy_(src.t())`` runs a scalar blocked loop: 3-5x the time of a plain copy on the
machines measured, and most of ``transfer``'s time on a BERT-sized model (its Linear weights are
three quarters of the bytes, and each one is transposed). ``libtorch_cpu`` also exports fbgemm's
``transpose_simd<T>`` (AVX2 / AVX-512). It is looked up in the library torch already loaded (never
loading anything) by its mangled name, which fixes its parameter types, and each element size is
checked once against torch's own transpose before it is used. Where the symbol is absent (other
builds, other platforms) or the check fails, ``copy_`` does the copy. Values are moved, never
computed: the result is bit for bit torch's.

Inside a :func:`deferred` block, copies are collected and run together over
``torch.get_num_threads()`` threads (ctypes and ``memmove`` release the GIL), largest first.
:func:`copy_array_later` writes a NumPy array straight into raw memory (a Paddle tensor's): no
torch tensor is made for either side, which is most of the Python cost of a copy.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import functools
import glob
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Iterator, NamedTuple

__all__ = ["copy_", "copy_later", "copy_array_later", "deferred", "fast_transpose_available"]

_log = logging.getLogger("paddlefix")

# fbgemm::transpose_simd<T>(int64_t M, int64_t N, const T* src, int64_t ld_src, T* dst, int64_t ld_dst)
_SYMBOLS = {
    1: "_ZN6fbgemm14transpose_simdIhEEvllPKT_lPS1_l",  # uint8_t
    2: "_ZN6fbgemm14transpose_simdItEEvllPKT_lPS1_l",  # uint16_t
    4: "_ZN6fbgemm14transpose_simdIfEEvllPKT_lPS1_l",  # float
}
_MIN_ELEMENTS = 1 << 12
"""Below this, ``copy_`` is as fast (the call overhead dominates)."""
_TILE = 256
"""Transposes run as tiles of this many rows and columns (see :func:`_tiles`)."""
_SPLIT_ELEMENTS = 1 << 18
"""From this size on, a transpose outside a ``deferred()`` block is split over the threads."""
_CHUNK_BYTES = 8 << 20
"""Plain copies in a ``deferred()`` block run as pieces of this size (to balance the threads)."""
_TRANSPOSE_COST = 2.5
"""A transposed byte costs about this many plain copied bytes (to balance the threads)."""
_PENDING_BYTES = 64 << 20
"""A ``deferred()`` block runs its copies once this much of their sources are temporaries (and
at its end): a temporary lives no longer than that. Views of a model's tensors cost nothing."""

_lock = threading.Lock()
_kernels: dict[int, Callable[..., None]] | None = None
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, pool)


# -- the kernels -----------------------------------------------------------------------------


def _library(torch: Any) -> Any:
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    mode = getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 0)
    for path in sorted(glob.glob(os.path.join(lib_dir, "libtorch_cpu.*"))):
        try:
            return ctypes.CDLL(path, mode=mode)  # RTLD_NOLOAD: only a library already in the process
        except OSError:
            continue
    return None


def _check(torch: Any, size: int, kernel: Callable[..., None]) -> bool:
    """Does ``kernel`` transpose like torch, on a shape that exercises the vector and tail paths?"""
    dtype = {1: torch.uint8, 2: torch.int16, 4: torch.int32}[size]
    rows, cols, ld = 37, 53, 61  # not multiples of any vector width; a padded leading dimension
    base = torch.arange(rows * ld, dtype=torch.int64).remainder(251 if size == 1 else 30011).to(dtype)
    src = base.view(rows, ld)[:, :cols]
    out = torch.full((cols, rows), 7, dtype=dtype)
    kernel(rows, cols, src.data_ptr(), ld, out.data_ptr(), rows)
    return bool(torch.equal(out, src.t()))


def _load(torch: Any) -> dict[int, Callable[..., None]]:
    lib = _library(torch)
    found: dict[int, Callable[..., None]] = {}
    if lib is None:
        _log.debug("align: libtorch_cpu is not loaded from torch's lib folder; transposes use copy_")
        return found
    for size, name in _SYMBOLS.items():
        try:
            fn = getattr(lib, name)
        except AttributeError:
            continue
        fn.restype = None
        fn.argtypes = [ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
                       ctypes.c_void_p, ctypes.c_int64]
        if _check(torch, size, fn):
            found[size] = fn
        else:  # pragma: no cover - a build whose symbol does something else
            _log.debug("align: fbgemm's transpose for %d-byte elements disagrees with torch; not used", size)
    return found


def _kernel(torch: Any, size: int) -> Callable[..., None] | None:
    global _kernels
    if _kernels is None:
        with _lock:
            if _kernels is None:
                _kernels = _load(torch)
    return _kernels.get(size)


def fast_transpose_available(element_size: int = 4) -> bool:
    """Whether transposing copies of ``element_size``-byte elements take the vectorised path.

    False when torch is not imported (this module never imports it).
    """
    torch = sys.modules.get("torch")
    return torch is not None and _kernel(torch, element_size) is not None


def _executor(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads, made again in a forked child (a pool does not survive fork)."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < workers:
            _pool = (os.getpid(), workers, ThreadPoolExecutor(workers, thread_name_prefix="paddlefix-copy"))
        return _pool[2]


def _workers(torch: Any) -> int:
    return max(1, min(int(torch.get_num_threads()), os.cpu_count() or 1, 8))


# -- one copy ----------------------------------------------------------------------------------

_Task = Callable[[], object]


def _tiles(kernel: Callable[..., None], rows: int, cols: int, src: int, ld: int, dst: int, ld_dst: int,
           size: int) -> None:
    """One transpose as 256 x 256 tiles: each keeps its source and destination rows in L2 and
    their pages in the TLB (about 1.3x faster than one call on a BERT layer's matrices)."""
    t = _TILE
    for i in range(0, rows, t):
        m = min(t, rows - i)
        for j in range(0, cols, t):
            kernel(m, min(t, cols - j), src + (i * ld + j) * size, ld, dst + (j * ld_dst + i) * size, ld_dst)


def _cpu_same(torch: Any, dst: Any, src: Any) -> bool:
    return (
        dst.dtype == src.dtype
        and dst.shape == src.shape
        and dst.device.type == "cpu"
        and src.device.type == "cpu"
        and not dst.dtype.is_complex
        and not src.is_conj()
        and not src.is_neg()
        and dst.is_contiguous()
        and not (dst.requires_grad and torch.is_grad_enabled())  # copy_ raises or records: let it
    )


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def _span(t: Any) -> tuple[int, int]:
    """The byte range [lo, hi) that tensor ``t`` reads or writes (torch strides are never negative)."""
    lo = int(t.data_ptr())
    if t.numel() == 0:
        return lo, lo
    last = sum((int(n) - 1) * int(st) for n, st in zip(t.shape, t.stride()))
    return lo, lo + (last + 1) * t.element_size()


def _transpose_plan(torch: Any, dst: Any, src: Any, spans: tuple[tuple[int, int], tuple[int, int]] | None = None,
                    same: bool | None = None) -> tuple[Callable[..., None], int, int, int, int, int, int] | None:
    """(kernel, rows, cols, src, ld, dst, size) when ``src`` is a transposed matrix the kernel can copy.

    ``spans``: ``(_span(dst), _span(src))`` and ``same``: ``_cpu_same(torch, dst, src)``, when known.
    """
    if dst.dim() != 2 or dst.numel() < _MIN_ELEMENTS:
        return None
    if not (_cpu_same(torch, dst, src) if same is None else same):
        return None
    rows, cols = int(src.shape[1]), int(src.shape[0])  # src is the transpose of a rows x cols matrix
    ld = int(src.stride(1))
    if src.stride(0) != 1 or ld < cols:
        return None
    kernel = _kernel(torch, dst.element_size())
    if kernel is None:
        return None
    d_span, s_span = spans if spans is not None else (_span(dst), _span(src))
    if _overlap(d_span, s_span):
        return None  # overlapping memory: copy_ handles (or refuses) that
    return kernel, rows, cols, s_span[0], ld, d_span[0], dst.element_size()


def _tasks(torch: Any, dst: Any, src: Any, spans: tuple[tuple[int, int], tuple[int, int]]) -> list[tuple[float, _Task]]:
    """The copy ``dst <- src`` as independent (cost, task) pieces a worker thread can run.

    ``spans``: ``(_span(dst), _span(src))``.
    """
    same = _cpu_same(torch, dst, src)
    plan = _transpose_plan(torch, dst, src, spans, same)
    nbytes = spans[0][1] - spans[0][0]
    if plan is not None:
        return [_transpose_task(plan, nbytes)]
    if same and src.is_contiguous() and not _overlap(*spans):
        return _memmove_tasks(spans[0][0], spans[1][0], nbytes)
    return [(float(nbytes), functools.partial(dst.copy_, src))]


def _transpose_task(plan: tuple[Callable[..., None], int, int, int, int, int, int], nbytes: int) -> tuple[float, _Task]:
    """A whole transpose (a :func:`_transpose_plan`) as one piece, its cost weighted."""
    kernel, rows, cols, s0, ld, d0, size = plan
    return nbytes * _TRANSPOSE_COST, functools.partial(_tiles, kernel, rows, cols, s0, ld, d0, rows, size)


def _memmove_tasks(d0: int, s0: int, nbytes: int) -> list[tuple[float, _Task]]:
    """A plain copy of ``nbytes`` as pieces of at most ``_CHUNK_BYTES`` (to balance the threads)."""
    return [(float(min(_CHUNK_BYTES, nbytes - k)), functools.partial(_memmove, d0 + k, s0 + k, min(_CHUNK_BYTES, nbytes - k)))
            for k in range(0, nbytes, _CHUNK_BYTES)]


def _memmove(dst: int, src: int, nbytes: int) -> None:
    ctypes.memmove(dst, src, nbytes)  # a foreign call: releases the GIL


def _bump(torch: Any, dst: Any) -> None:
    increment = getattr(getattr(torch.autograd, "graph", None), "increment_version", None)
    if increment is not None:
        increment(dst)  # as copy_ does: a graph that saved dst sees it changed


def _run_tasks(torch: Any, tasks: list[tuple[float, _Task]], workers: int) -> None:
    """Run ``tasks`` largest first, each taken by the next free thread; wait for all of them."""
    order = iter([task for _, task in sorted(tasks, key=lambda t: -t[0])])
    take = threading.Lock()

    def work() -> None:
        with torch.no_grad():  # grad mode is per thread
            while True:
                with take:
                    task = next(order, None)
                if task is None:
                    return
                task()

    futures = [_executor(workers).submit(work) for _ in range(workers)]
    error: BaseException | None = None
    for fut in futures:  # wait for all, even after a failure: nothing runs after we return
        try:
            fut.result()
        except BaseException as exc:
            error = error or exc
    if error is not None:
        raise error


def copy_(dst: Any, src: Any) -> None:
    """``dst.copy_(src)`` (torch tensors, under ``no_grad``), with transposed 2-D sources vectorised."""
    torch = sys.modules["torch"]
    plan = _transpose_plan(torch, dst, src)
    if plan is None:
        dst.copy_(src)
        return
    _transpose_now(torch, *plan)
    _bump(torch, dst)


def _transpose_now(torch: Any, kernel: Callable[..., None], rows: int, cols: int, s0: int, ld: int, d0: int,
                   size: int) -> None:
    """Run one transpose at once, split over the threads when it is big."""
    parts = min(_workers(torch), rows // _TILE) if rows * cols >= _SPLIT_ELEMENTS else 1
    if parts <= 1:
        _tiles(kernel, rows, cols, s0, ld, d0, rows, size)
    else:  # bands of source rows, one per thread
        cuts = [0] + [(rows * i // parts) // _TILE * _TILE for i in range(1, parts)] + [rows]
        _run_tasks(torch, [(float(b - a), functools.partial(_tiles, kernel, b - a, cols, s0 + a * ld * size, ld,
                                                             d0 + a * size, rows, size))
                           for a, b in zip(cuts, cuts[1:])], parts)


# -- copies of NumPy arrays into raw memory ---------------------------------------------------


def _array_plan(torch: Any, ptr: int, arr: Any) -> tuple[tuple[tuple[int, int], tuple[int, int]], list[tuple[float, _Task]], Any] | None:
    """((dst span, src span), tasks, transpose plan or None) writing ``arr`` into the C-contiguous
    memory at ``ptr``; None for a layout, size or dtype handled elsewhere, or overlapping memory."""
    size = arr.itemsize
    nbytes = arr.nbytes
    if nbytes == 0 or arr.dtype.kind not in "biuf":
        return None
    s0 = arr.ctypes.data
    d_span = (ptr, ptr + nbytes)
    if arr.flags.c_contiguous:
        s_span = (s0, s0 + nbytes)
        if _overlap(d_span, s_span):
            return None
        return (d_span, s_span), _memmove_tasks(ptr, s0, nbytes), None
    if arr.ndim != 2:
        return None
    (cols, rows), (st0, st1) = arr.shape, arr.strides  # arr is the transpose of a rows x cols matrix
    if st0 != size or st1 % size or st1 // size < cols:
        return None
    ld = st1 // size
    kernel = _kernel(torch, size)
    if kernel is None:
        return None
    s_span = (s0, s0 + ((cols - 1) * st0 + (rows - 1) * st1) + size)
    if _overlap(d_span, s_span):
        return None
    plan = (kernel, rows, cols, s0, ld, ptr, size)
    return (d_span, s_span), [_transpose_task(plan, nbytes)], plan


def copy_array_later(ptr: int, arr: Any, temporary: bool = True) -> bool:
    """Write NumPy array ``arr`` into the C-contiguous memory at ``ptr`` (``arr``'s shape and dtype).

    For memory no torch tensor describes (a Paddle tensor's): no tensor is made for either side.
    Inside a :func:`deferred` block the copy runs at its end (``arr`` is kept alive until then);
    outside one, at once. Handles C-contiguous arrays and transposed matrices (the vectorised
    transpose) of 1-, 2-, 4- and 8-byte numbers (a transpose: 1-, 2-, 4-byte); returns False,
    copying nothing, for other layouts, for memory shared with ``arr``, or without torch (whose
    library holds the transpose). The caller keeps the memory at ``ptr`` valid until the copy ran.
    """
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    planned = _array_plan(torch, ptr, arr)
    if planned is None:
        return False
    spans, tasks, plan = planned
    batch = _current.get()
    if batch is not None:
        batch.add(_Copy(spans, tasks, None, arr, arr.nbytes if temporary else 0))
    elif plan is not None:
        _transpose_now(torch, *plan)
    else:
        for _, task in tasks:
            task()
    return True


# -- deferred copies ---------------------------------------------------------------------------


def _hazard(copies: list[_Copy]) -> bool:
    """Whether some copy writes memory another copy (or itself) reads or writes: then order matters."""
    spans = []
    for d_span, s_span in (c.spans for c in copies):
        for span, writes in ((d_span, True), (s_span, False)):
            if span[1] > span[0]:
                spans.append((span[0], span[1], writes))
    spans.sort()
    hi_written = hi_any = -1
    for lo, hi, writes in spans:  # an earlier span overlaps this one iff its end is past this start
        if (hi_any if writes else hi_written) > lo:
            return True
        hi_any = max(hi_any, hi)
        if writes:
            hi_written = max(hi_written, hi)
    return False


class _Copy(NamedTuple):
    """One collected copy."""

    spans: tuple[tuple[int, int], tuple[int, int]]
    """(destination span, source span), bytes."""
    tasks: list[tuple[float, _Task]]
    """The copy as (cost, task) pieces, in an order that also works one after the other."""
    dst: Any
    """The destination torch tensor (its version counter is bumped after the copy), or None."""
    keep: Any
    """Whatever must stay alive until the copy ran (the source)."""
    temporary: int
    """Bytes of the source that are a temporary (freed once copied)."""


class _Batch:
    """Copies collected, then run together on worker threads while the caller waits.

    Running them while the caller executes Python would make every worker wait for the GIL
    between copies (up to the interpreter's switch interval each time): they run in ``flush()``.
    """

    def __init__(self, torch: Any, workers: int) -> None:
        self._torch = torch
        self._workers = workers
        self._copies: list[_Copy] = []
        self._bytes = 0

    def submit(self, dst: Any, src: Any, temporary: bool) -> None:
        spans = (_span(dst), _span(src))
        self.add(_Copy(spans, _tasks(self._torch, dst, src, spans), dst, src,
                       src.numel() * src.element_size() if temporary else 0))

    def add(self, copy: _Copy) -> None:
        self._copies.append(copy)
        self._bytes += copy.temporary
        if self._bytes >= _PENDING_BYTES:
            self.flush()

    def flush(self) -> None:
        """Run every collected copy and wait; raise the first failure (after all have finished).

        Copies that share memory with another one run one after the other, in the order given.
        """
        copies, self._copies, self._bytes = self._copies, [], 0
        if not copies:
            return
        torch = self._torch
        if _hazard(copies):
            with torch.no_grad():
                for c in copies:  # in order, each one's pieces one after the other
                    for _, task in c.tasks:
                        task()
                    if c.dst is not None:
                        _bump(torch, c.dst)
            return
        try:
            _run_tasks(torch, [task for c in copies for task in c.tasks], self._workers)
        finally:
            for c in copies:
                if c.dst is not None:
                    _bump(torch, c.dst)


_current: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("paddlefix_copy_batch", default=None)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within the block, :func:`copy_later` collects copies; they run over the threads at its end.

    Every copy has finished when the block is left (also when it raises); a copy that failed is
    raised then. Sources and destinations must not change inside the block. Without torch, with
    one thread, or inside another ``deferred()`` block, copies happen at once.
    """
    torch = sys.modules.get("torch")
    if torch is None or _current.get() is not None or _workers(torch) < 2:
        yield
        return
    batch = _Batch(torch, _workers(torch))
    token = _current.set(batch)
    try:
        yield
    except BaseException:
        _current.reset(token)
        with contextlib.suppress(BaseException):
            batch.flush()  # what was collected still lands, as if copied at once
        raise
    _current.reset(token)
    batch.flush()


def copy_later(dst: Any, src: Any, temporary: bool = True) -> None:
    """:func:`copy_`, run on a worker thread inside a :func:`deferred` block (at once outside one).

    ``temporary``: ``src`` would be freed once copied (not a view of a tensor kept elsewhere); the
    block runs what it collected before such sources add up to ``_PENDING_BYTES``.
    """
    batch = _current.get()
    if batch is None:
        copy_(dst, src)
    else:
        batch.submit(dst, src, temporary)

