"""align._metrics: per-tensor metrics, judged against torch.testing.assert_close as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from paddlefix.align._errors import AlignError
from paddlefix.align._metrics import DEFAULT_TOLERANCES, resolve_tolerance, tensor_metrics


def torch_close(a: np.ndarray, e: np.ndarray, **kw) -> bool:
    try:
        torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(e), **kw)
        return True
    except AssertionError:
        return False


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_defaults_agree_with_assert_close(dtype):
    rng = np.random.default_rng(0)
    rtol, atol = DEFAULT_TOLERANCES[dtype]
    agree = 0
    for trial in range(60):
        e = rng.normal(0, 10 ** rng.uniform(-6, 2), (7, 5)).astype(dtype)
        # well inside or well outside (torch rounds |a - e| in the dtype itself; we compute it exactly)
        scale = (atol + rtol * np.abs(e.astype(np.float64))) * rng.choice([0.3, 3.0])
        pick = rng.random(e.shape) < 0.2
        a = (e.astype(np.float64) + np.where(pick, scale * rng.choice([-1, 1], e.shape), 0)).astype(dtype)
        ours = tensor_metrics(a, e).ok
        assert ours == torch_close(a, e), (dtype, trial)
        agree += 1
    assert agree == 60


def test_tolerance_table_and_forms():
    assert DEFAULT_TOLERANCES["float32"] == (1.3e-6, 1e-5)
    assert DEFAULT_TOLERANCES["float16"] == (1e-3, 1e-5)
    assert DEFAULT_TOLERANCES["bfloat16"] == (1.6e-2, 1e-5)
    assert DEFAULT_TOLERANCES["float64"] == (1e-7, 1e-7)
    # the table is torch's own
    for name, (rtol, atol) in DEFAULT_TOLERANCES.items():
        if name.startswith("complex"):
            continue
        from torch.testing._comparison import _DTYPE_PRECISIONS

        assert _DTYPE_PRECISIONS[getattr(torch, name)] == (rtol, atol)
    assert resolve_tolerance(None, "int64")[:2] == (0.0, 0.0)
    assert resolve_tolerance((1e-3, 1e-4), "float32")[:2] == (1e-3, 1e-4)
    assert resolve_tolerance((1e-3, 1e-4), "int64")[:2] == (0.0, 0.0)
    r = resolve_tolerance("reprod", "float32")
    assert (r.rtol, r.atol, r.mean_atol, r.source) == (1.3e-6, 1e-5, 1e-6, "reprod")
    for bad in ("loose", (1e-3,), (1e-3, -1.0), (float("nan"), 0.0), "1e-6", [True, 0.1]):
        with pytest.raises(AlignError, match="tolerance"):
            resolve_tolerance(bad, "float32")


def test_hidden_dimension_reversed_fails_although_means_equal():
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (2, 5, 16)).astype(np.float32)
    rev = np.ascontiguousarray(x[..., ::-1])
    assert abs(float(rev.mean()) - float(x.mean())) < 1e-6  # what a mean-only tool compares
    for tol in (None, "reprod", (1e-3, 1e-3)):
        m = tensor_metrics(rev, x, tolerance=tol)
        assert not m.ok
        assert m.mismatched > 0.9 * x.size
        assert m.cosine < 0.5


def test_reprod_mean_never_hides_an_outlier():
    rng = np.random.default_rng(2)
    e = rng.normal(0, 1, (1000,)).astype(np.float32)
    a = e.copy()
    a[123] += 5e-4  # mean |diff| = 5e-7 <= 1e-6, one element far out
    m = tensor_metrics(a, e, tolerance="reprod")
    assert m.mean_abs <= 1e-6
    assert not m.ok and m.mismatched == 1 and m.worst_index == [123]
    assert m.worst_actual == pytest.approx(float(a[123])) and m.worst_expected == pytest.approx(float(e[123]))
    # and the mean is a condition too: many small differences within rtol/atol but mean above 1e-6
    b = e + np.float32(8e-6)
    mb = tensor_metrics(b, e, tolerance="reprod")
    assert mb.mismatched == 0 and not mb.ok and "mean absolute difference" in mb.problem
    assert tensor_metrics(b, e).ok  # the per-dtype default accepts it


def test_metrics_values():
    e = np.array([[1.0, -2.0], [4.0, 0.5]], dtype=np.float32)
    a = e.copy()
    a[1, 0] = 4.5
    m = tensor_metrics(a, e)
    assert not m.ok and m.mismatched == 1 and m.fraction_out == 0.25
    assert m.max_abs == pytest.approx(0.5) and m.max_rel == pytest.approx(0.125)
    assert m.mean_abs == pytest.approx(0.125) and m.scale_rel == pytest.approx(0.125)
    assert m.worst_index == [1, 0] and m.worst_actual == 4.5 and m.worst_expected == 4.0
    assert 0.99 < m.cosine < 1.0
    # the message reads like assert_close's
    try:
        torch.testing.assert_close(torch.from_numpy(a), torch.from_numpy(e))
    except AssertionError as exc:
        theirs = str(exc)
    ours = m.message("output[0]")
    assert ours.startswith("output[0] are not close!")
    assert "Mismatched elements: 1 / 4 (25.0%)" in ours and "Mismatched elements: 1 / 4 (25.0%)" in theirs
    assert "Greatest absolute difference: 0.5 at index (1, 0) (up to 1e-05 allowed)" in ours
    assert "Greatest absolute difference: 0.5 at index (1, 0) (up to 1e-05 allowed)" in theirs
    assert tensor_metrics(e, e).message() == ""


def test_nan_inf_shape_dtype_and_integers():
    nan, inf = np.nan, np.inf
    e = np.array([nan, 1.0, inf, -inf], dtype=np.float32)
    m = tensor_metrics(e.copy(), e)
    assert m.ok and m.nan == 1 and m.inf == 2 and "NaN in both" in m.note
    assert torch_close(e.copy(), e, equal_nan=True)  # the same decision as equal_nan=True
    bad = np.array([1.0, 1.0, inf, inf], dtype=np.float32)
    mb = tensor_metrics(bad, e)
    assert not mb.ok and mb.mismatched == 2 and mb.max_abs == inf
    # shapes
    ms = tensor_metrics(np.zeros((3, 4), np.float32), np.zeros((4, 3), np.float32))
    assert not ms.ok and ms.problem.startswith("shape mismatch") and ms.fraction_out == 1.0
    m1 = tensor_metrics(np.array([2.5], np.float32), np.array(2.5, np.float32))
    assert m1.ok and "size-1" in m1.note
    # dtypes
    md = tensor_metrics(np.ones(3, np.float64), np.ones(3, np.float32))
    assert not md.ok and md.problem.startswith("dtype mismatch") and md.mismatched == 0
    # integers are exact, whatever the tolerance
    ids = np.array([1, 2, 3], np.int64)
    assert tensor_metrics(ids, ids.copy(), tolerance=(1.0, 1.0)).ok
    mi = tensor_metrics(np.array([1, 2, 4], np.int64), ids, tolerance=(1.0, 1.0))
    assert not mi.ok and mi.worst_index == [2] and mi.cosine is None
    # empty tensors agree
    assert tensor_metrics(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32)).ok


def test_to_dict_round_trip_with_infinities():
    from paddlefix.align._metrics import Metrics

    m = tensor_metrics(np.array([1.0, 0.0], np.float32), np.array([1.0, np.inf], np.float32))
    import json

    d = json.loads(json.dumps(m.to_dict(), allow_nan=False))
    back = Metrics.from_dict(d)
    assert back.max_abs == np.inf and back.ok is False and back.mismatched == m.mismatched


def test_broadcast_shapes_compared_broadcast_and_gradients_summed():
    from paddlefix.align._metrics import reduce_broadcast

    rng = np.random.default_rng(3)
    pos = rng.normal(0, 1, (1, 4, 3)).astype(np.float32)  # torch: position embeddings [1, S, H]
    expanded = np.repeat(pos, 2, axis=0)  # paddle: expanded to [B, S, H]
    m = tensor_metrics(expanded, pos)
    assert m.ok and "broadcasting" in m.note and m.numel == expanded.size
    wrong = expanded.copy()
    wrong[1, 2, 0] += 1.0
    mw = tensor_metrics(wrong, pos)
    assert not mw.ok and mw.worst_index == [1, 2, 0]
    # the gradient of a broadcast tensor is the sum of the expanded one's over the batch
    g = rng.normal(0, 1, (2, 4, 3)).astype(np.float32)
    assert np.allclose(reduce_broadcast(g, (1, 4, 3)), g.sum(0, keepdims=True), atol=1e-6)
    assert reduce_broadcast(g, (2, 4, 3)) is g or reduce_broadcast(g, (2, 4, 3)).shape == (2, 4, 3)
    # different ranks or incompatible sizes are shape mismatches
    assert not tensor_metrics(np.zeros((2, 4, 3), np.float32), np.zeros((4, 3), np.float32)).ok
    assert not tensor_metrics(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32)).ok


def test_large_tensors_are_judged_in_chunks_exactly():
    """Above one chunk (2**20 elements) the statistics are combined across chunks, unchanged."""
    rng = np.random.default_rng(4)
    e = rng.normal(0, 1, (3, 1 << 20)).astype(np.float32)
    a = (e + rng.normal(0, 1e-7, e.shape)).astype(np.float32)
    a[2, 12345] += 0.25
    m = tensor_metrics(a, e)
    d = np.abs(a.astype(np.float64) - e.astype(np.float64))
    assert not m.ok and m.worst_index == [2, 12345] and m.mismatched == int(np.sum(d > 1e-5 + 1.3e-6 * np.abs(e)))
    assert m.max_abs == pytest.approx(d.max()) and m.mean_abs == pytest.approx(d.mean(), rel=1e-9)
    cos = float(np.dot(a.ravel().astype(np.float64), e.ravel()) /
                (np.linalg.norm(a.astype(np.float64)) * np.linalg.norm(e.astype(np.float64))))
    assert m.cosine == pytest.approx(cos, abs=1e-12)


def test_transposed_views_are_judged_in_tiles_as_their_copies():
    """A Linear weight in the other layout is compared as a transposed view, read in tiles: every
    statistic equals the comparison with a contiguous copy, ties included (first element in C order)."""
    rng = np.random.default_rng(5)
    torch_layout = rng.normal(0, 1, (700, 600)).astype(np.float32)
    view = torch_layout.T  # [600, 700], not contiguous
    view[100, 600] = view[200, 3] = 1.0
    a = (view + rng.normal(0, 1e-7, view.shape)).astype(np.float32)
    a[100, 600] = a[200, 3] = 1.5  # two equal worst differences; the tile of the second is read first
    a[300, 300] = view[300, 300] = np.nan  # NaN in both
    m_view, m_copy = tensor_metrics(a, view), tensor_metrics(a, np.ascontiguousarray(view))
    d_view, d_copy = m_view.to_dict(), m_copy.to_dict()
    assert d_view.pop("cosine") == pytest.approx(d_copy.pop("cosine"), abs=1e-12)  # summed in another order
    assert d_view == d_copy
    assert not m_view.ok and m_view.nan == 1 and m_view.mismatched == 2
    assert m_view.worst_index == [100, 600] and m_view.worst_actual == 1.5  # the first in C order
