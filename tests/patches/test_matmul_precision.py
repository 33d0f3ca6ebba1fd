"""matmul_precision: float32 matmul precision modes, compared with NumPy / torch float64.

There is no GPU here: the TF32 part is tested by calling the patch's own switch functions
with a stand-in core object that only records calls (Paddle's math is never faked), and
by checking which switch the real CPU build exposes. Everything else runs real Paddle.
"""

from __future__ import annotations

import sys
import types
import warnings
from typing import Any, Callable

import numpy as np
import paddle
import pytest
import torch

import paddlefix
from paddlefix.patches import matmul_precision as mp
from tests.conftest import run_python

F4, F8 = np.float32, np.float64
SCALES = (1.0, 1e2, 1e4)
M, K, N, B = 24, 256, 40, 3
HAS_RMATMUL = "__rmatmul__" in vars(paddle.Tensor)


@pytest.fixture
def clean(paddlefix_clean: None, monkeypatch: pytest.MonkeyPatch):
    """No patch applied, no mode chosen, no PADDLEFIX_MATMUL_PRECISION."""
    monkeypatch.delenv(mp.ENV, raising=False)
    mp._mode = None
    yield
    paddlefix.revert()
    mp._mode = None


def _float64_mode() -> None:
    paddlefix.set_float32_matmul_precision("float64")
    assert paddlefix.status()["matmul_precision"].state == "applied"


def _equal_fraction(out: np.ndarray, ref: np.ndarray) -> float:
    assert out.dtype == ref.dtype and out.shape == ref.shape
    return float(np.mean(out == ref))


# -- entry points: (operand shapes, paddle function, torch float64 function) --------------
def _linear_layer(x: paddle.Tensor, w: paddle.Tensor, b: paddle.Tensor):
    layer = paddle.nn.Linear(K, N)
    layer.weight.set_value(w)
    layer.bias.set_value(b)
    return layer(x), [x, layer.weight, layer.bias]


CASES: dict[str, tuple[list[tuple[int, ...]], Callable[..., Any], Callable[..., Any]]] = {
    "paddle.matmul": ([(M, K), (K, N)], lambda x, y: paddle.matmul(x, y), torch.matmul),
    "matmul(transpose_x)": (
        [(K, M), (K, N)],
        lambda x, y: paddle.matmul(x, y, transpose_x=True),
        lambda x, y: x.T @ y,
    ),
    "matmul(transpose_y)": (
        [(M, K), (N, K)],
        lambda x, y: paddle.matmul(x, y, transpose_y=True),
        lambda x, y: x @ y.T,
    ),
    "matmul(transpose_x, transpose_y)": (
        [(K, M), (N, K)],
        lambda x, y: paddle.matmul(x, y, True, True),
        lambda x, y: x.T @ y.T,
    ),
    "paddle.matmul batched": ([(B, M, K), (K, N)], lambda x, y: paddle.matmul(x, y), torch.matmul),
    "paddle.linalg.matmul": ([(M, K), (K, N)], lambda x, y: paddle.linalg.matmul(x, y), torch.matmul),
    "paddle.mm": ([(M, K), (K, N)], lambda x, y: paddle.mm(x, y), torch.mm),
    "paddle.bmm": ([(B, M, K), (B, K, N)], lambda x, y: paddle.bmm(x, y), torch.bmm),
    "Tensor.matmul": ([(M, K), (K, N)], lambda x, y: x.matmul(y), torch.matmul),
    "Tensor.mm": ([(M, K), (K, N)], lambda x, y: x.mm(y), torch.mm),
    "Tensor.bmm": ([(B, M, K), (B, K, N)], lambda x, y: x.bmm(y), torch.bmm),
    "x @ y": ([(M, K), (K, N)], lambda x, y: x @ y, torch.matmul),
    "y.__rmatmul__(x)": ([(M, K), (K, N)], lambda x, y: y.__rmatmul__(x), torch.matmul),
    "paddle.einsum": (
        [(B, M, K), (B, K, N)],
        lambda x, y: paddle.einsum("bij,bjk->bik", x, y),
        lambda x, y: torch.einsum("bij,bjk->bik", x, y),
    ),
    "F.linear": (
        [(M, K), (K, N), (N,)],
        lambda x, w, b: paddle.nn.functional.linear(x, w, b),
        lambda x, w, b: x @ w + b,
    ),
    "F.linear (no bias)": (
        [(B, M, K), (K, N)],
        lambda x, w: paddle.nn.functional.linear(x, w),
        lambda x, w: x @ w,
    ),
    "nn.Linear": ([(M, K), (K, N), (N,)], _linear_layer, lambda x, w, b: x @ w + b),
}


def _run_case(name: str, scale: float, seed: int = 0):
    """(paddle output, paddle grads, correctly rounded output, correctly rounded grads)."""
    shapes, pfn, tfn = CASES[name]
    rng = np.random.default_rng(seed)
    arrays = [(rng.standard_normal(s) * scale).astype(F4) for s in shapes]
    arrays[-1] *= scale if name.endswith("Linear") or name == "F.linear" else 1  # bias ~ scale**2

    tensors = [paddle.to_tensor(a, stop_gradient=False) for a in arrays]
    result = pfn(*tensors)
    out, holders = result if isinstance(result, tuple) else (result, tensors)
    upstream = rng.standard_normal(out.shape).astype(F4)
    (out * paddle.to_tensor(upstream)).sum().backward()
    grads = [h.grad.numpy() for h in holders]

    wide = [torch.tensor(a.astype(F8), requires_grad=True) for a in arrays]
    ref = tfn(*wide)
    (ref * torch.tensor(upstream.astype(F8))).sum().backward()
    return out.numpy(), grads, ref.detach().numpy().astype(F4), [w.grad.numpy().astype(F4) for w in wide]


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", list(CASES))
def test_float64_mode_is_correctly_rounded(clean, name: str, scale: float) -> None:
    """Results and gradients equal the float64 product rounded once, on >= 99.9% of elements."""
    if name == "y.__rmatmul__(x)" and not HAS_RMATMUL:
        pytest.skip("this Paddle's Tensor has no __rmatmul__")
    if name == "paddle.linalg.matmul" and not hasattr(paddle.linalg, "matmul"):
        pytest.skip("this Paddle has no paddle.linalg.matmul (added in 3.x)")
    _float64_mode()
    out, grads, ref, ref_grads = _run_case(name, scale)
    assert out.dtype == F4
    assert _equal_fraction(out, ref) >= 0.999, name
    for i, (g, r) in enumerate(zip(grads, ref_grads)):
        assert g.dtype == F4
        assert _equal_fraction(g, r) >= 0.999, f"{name}: gradient of operand {i}"


def test_stock_float32_is_not_correctly_rounded(clean) -> None:
    """The baseline the float64 mode fixes: stock float32 misses the rounded product often."""
    out, grads, ref, ref_grads = _run_case("paddle.matmul", 1e2)
    assert _equal_fraction(out, ref) < 0.9
    assert _equal_fraction(grads[0], ref_grads[0]) < 0.9


def test_numpy_operand_with_operator(clean) -> None:
    """``ndarray @ Tensor`` (Paddle 3.x, via __rmatmul__) is widened too."""
    if not HAS_RMATMUL:
        pytest.skip("this Paddle's Tensor has no __rmatmul__ (ndarray @ Tensor raises)")
    _float64_mode()
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((M, K)).astype(F4), rng.standard_normal((K, N)).astype(F4)
    out = a @ paddle.to_tensor(b)
    assert isinstance(out, paddle.Tensor) and out.dtype == paddle.float32
    assert _equal_fraction(out.numpy(), (a.astype(F8) @ b.astype(F8)).astype(F4)) >= 0.999


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_computed_in_float32(clean, dtype: str) -> None:
    """float16 / bfloat16 inputs: computed in float32, rounded once, dtype kept (gradients too).

    Stock Paddle 2.6.2 CPU has no float16 / bfloat16 matmul kernel at all; 3.3.1 has them.
    """
    _float64_mode()
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((64, K)).astype(F4), rng.standard_normal((K, 48)).astype(F4)
    x = paddle.to_tensor(a).astype(dtype)
    y = paddle.to_tensor(b).astype(dtype)
    x.stop_gradient = False
    out = paddle.matmul(x, y)
    assert out.dtype == x.dtype
    out.sum().backward()
    assert x.grad.dtype == x.dtype
    # the reference: the float32-exact inputs multiplied in float64, rounded once to ``dtype``
    xa, ya = x.astype("float32").numpy().astype(F8), y.astype("float32").numpy().astype(F8)
    ref = paddle.to_tensor((xa @ ya).astype(F4)).astype(dtype).astype("float32").numpy()
    assert _equal_fraction(out.astype("float32").numpy(), ref) >= 0.99
    ref_grad = paddle.to_tensor((np.ones((64, 48)) @ ya.T).astype(F4)).astype(dtype).astype("float32").numpy()
    assert _equal_fraction(x.grad.astype("float32").numpy(), ref_grad) >= 0.99


def test_other_dtypes_untouched(clean) -> None:
    """float64 inputs go to Paddle's own function unchanged (no cast), bit-identical."""
    original = paddle.matmul
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((M, K)), rng.standard_normal((K, N))
    stock = original(paddle.to_tensor(a), paddle.to_tensor(b)).numpy()
    _float64_mode()
    assert paddle.matmul is not original
    out = paddle.matmul(paddle.to_tensor(a), paddle.to_tensor(b))
    assert out.dtype == paddle.float64
    np.testing.assert_array_equal(out.numpy(), stock)


def test_highest_on_cpu_wraps_nothing_and_is_bit_identical(clean) -> None:
    """Default mode on a CPU build: skipped with a reason, nothing replaced, stock results."""
    if paddle.is_compiled_with_cuda():
        pytest.skip("GPU build")
    before = {k: v for k, v in vars(paddle.Tensor).items() if k in ("matmul", "__matmul__", "mm", "bmm")}
    functions = (paddle.matmul, paddle.mm, paddle.bmm, paddle.einsum, paddle.nn.functional.linear)
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((M, K)).astype(F4), rng.standard_normal((K, N)).astype(F4)
    stock = paddle.matmul(paddle.to_tensor(a), paddle.to_tensor(b)).numpy()
    report = paddlefix.apply()["matmul_precision"]
    assert paddlefix.get_float32_matmul_precision() == "highest"
    assert report.state == "skipped"
    assert "CPU build: no TF32" in report.reason
    assert report.targets == ()
    assert (paddle.matmul, paddle.mm, paddle.bmm, paddle.einsum, paddle.nn.functional.linear) == functions
    assert all(vars(paddle.Tensor)[k] is v for k, v in before.items())
    out = (paddle.to_tensor(a) @ paddle.to_tensor(b)).numpy()
    np.testing.assert_array_equal(out, stock)


def test_switching_modes_installs_and_removes_wrappers(clean) -> None:
    original = paddle.matmul
    operator = vars(paddle.Tensor)["__matmul__"]
    paddlefix.apply()
    paddlefix.set_float32_matmul_precision("float64")
    assert paddlefix.get_float32_matmul_precision() == "float64"
    assert paddlefix.is_patched(paddle, "matmul") and paddlefix.get_original(paddle, "matmul") is original
    assert paddlefix.is_patched(paddle.Tensor, "__matmul__")
    assert "paddle.nn.functional.linear" in paddlefix.status()["matmul_precision"].targets
    paddlefix.set_float32_matmul_precision("highest")
    assert paddle.matmul is original and vars(paddle.Tensor)["__matmul__"] is operator
    if not paddle.is_compiled_with_cuda():
        assert paddlefix.status()["matmul_precision"].state == "skipped"
    paddlefix.set_float32_matmul_precision("FLOAT64")  # case-insensitive, as the environment
    assert paddlefix.is_patched(paddle, "matmul")
    paddlefix.set_float32_matmul_precision("float64")  # again: wraps nothing twice
    assert paddlefix.get_original(paddle, "matmul") is original
    paddlefix.set_float32_matmul_precision("high")
    assert paddle.matmul is original


def test_revert_restores_every_original(clean) -> None:
    owners = [
        (paddle, "matmul"), (paddle, "mm"), (paddle, "bmm"), (paddle, "einsum"),
        (paddle.linalg, "matmul"), (sys.modules["paddle.tensor"], "matmul"), (paddle.nn.functional, "linear"),
    ]
    if "matmul" in vars(paddle.tensor):  # 3.x: the ``paddle.tensor`` proxy object carries it
        owners.append((paddle.tensor, "matmul"))
    owners += [(paddle.Tensor, a) for a in ("matmul", "mm", "bmm", "__matmul__", "__rmatmul__")]
    owners = [(o, a) for o, a in owners if a in vars(o)]  # 2.6: no paddle.linalg.matmul, __rmatmul__
    before = [vars(o)[a] for o, a in owners]
    _float64_mode()
    assert all(vars(o)[a] is not v for (o, a), v in zip(owners, before))
    paddlefix.revert()
    assert all(vars(o)[a] is v for (o, a), v in zip(owners, before))
    assert paddlefix.status()["matmul_precision"].targets == ()


def test_wrappers_keep_names_and_docs(clean) -> None:
    import inspect

    signature = inspect.signature(paddle.matmul)
    doc = paddle.nn.functional.linear.__doc__
    _float64_mode()
    assert paddle.matmul.__name__ == paddlefix.get_original(paddle, "matmul").__name__
    assert inspect.signature(paddle.matmul) == signature
    assert paddle.nn.functional.linear.__doc__ == doc


@pytest.mark.parametrize("bad", ["HIGHEST!", "tf32", "", None, 1])
def test_invalid_mode_raises_valueerror(clean, bad: Any) -> None:
    with pytest.raises(ValueError, match="valid choices: highest, high, medium, float64"):
        paddlefix.set_float32_matmul_precision(bad)
    assert paddlefix.get_float32_matmul_precision() == "highest"


def test_invalid_environment_value(clean, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(mp.ENV, "fast")
    with pytest.raises(paddlefix.ConfigError, match="PADDLEFIX_MATMUL_PRECISION.*'fast'.*float64"):
        paddlefix.apply()
    with pytest.raises(paddlefix.ConfigError):
        paddlefix.get_float32_matmul_precision()


def test_probe_on_this_build(clean) -> None:
    if paddle.is_compiled_with_cuda():
        pytest.skip("GPU build")
    finding = mp.problem_present()
    assert not finding.present and "CPU build: no TF32" in finding.detail
    mp._mode = "float64"
    finding = mp.problem_present()
    assert finding.present and "float64" in finding.detail


def test_environment_selects_float64_at_import() -> None:
    """PADDLEFIX_MATMUL_PRECISION=float64 + apply() before ``import paddle`` (fresh process)."""
    code = (
        "import paddlefix, numpy as np\n"
        "paddlefix.apply()\n"
        "assert paddlefix.status()['matmul_precision'].state == 'pending'\n"
        "import paddle\n"
        "s = paddlefix.status()['matmul_precision']\n"
        "assert s.state == 'applied', s.reason\n"
        "a = np.random.default_rng(0).standard_normal((24, 512)).astype('f4') * 1e4\n"
        "out = (paddle.to_tensor(a) @ paddle.to_tensor(a.T)).numpy()\n"
        "ref = (a.astype('f8') @ a.T.astype('f8')).astype('f4')\n"
        "print(paddlefix.get_float32_matmul_precision(), np.mean(out == ref))\n"
    )
    proc = run_python(code, env={mp.ENV: "float64"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    mode, fraction = proc.stdout.split()[-2:]
    assert mode == "float64" and float(fraction) >= 0.999


def test_mode_set_before_import_applies_at_import() -> None:
    code = (
        "import sys, paddlefix\n"
        "paddlefix.set_float32_matmul_precision('float64')\n"
        "assert 'paddle' not in sys.modules\n"
        "assert paddlefix.status()['matmul_precision'].state == 'pending'\n"
        "import paddle\n"
        "print(paddlefix.status()['matmul_precision'].state, paddlefix.is_patched(paddle.nn.functional, 'linear'))\n"
    )
    proc = run_python(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == ["applied", "True"]


# -- the TF32 switch, tested by what the patch calls ------------------------------------------
class _FakeCore:
    """Stands in for ``paddle.base.core`` of a GPU build: only the switch, recording calls."""

    def __init__(self, on: bool) -> None:
        self.on = on
        self.calls: list[bool] = []

    def get_cublas_switch(self) -> bool:
        return self.on

    def set_cublas_switch(self, on: bool) -> None:
        self.calls.append(on)
        self.on = on


def _recorder() -> tuple[list[tuple[Callable[[], None], str]], Callable[[Callable[[], None], str], None]]:
    registered: list[tuple[Callable[[], None], str]] = []
    return registered, lambda fn, label: registered.append((fn, label))


def test_tf32_switch_turned_off_and_restored() -> None:
    core = _FakeCore(on=True)
    controls = mp.tf32_controls(core)
    assert [c.name for c in controls] == ["core.set_cublas_switch"]
    registered, on_revert = _recorder()
    assert mp.set_tf32(controls, False, on_revert) == ["core.set_cublas_switch(False)"]
    assert core.calls == [False] and len(registered) == 1
    registered[0][0]()  # what revert runs
    assert core.calls == [False, True] and core.on is True


def test_tf32_switch_left_alone_when_already_right() -> None:
    core = _FakeCore(on=False)
    registered, on_revert = _recorder()
    assert mp.set_tf32(mp.tf32_controls(core), False, on_revert) == []
    assert core.calls == [] and registered == []
    assert mp.set_tf32(mp.tf32_controls(core), True, on_revert) == ["core.set_cublas_switch(True)"]
    assert core.calls == [True]


def test_tf32_flag_used_when_registered() -> None:
    """Builds that register FLAGS_cublas_allow_tf32 get it set too (and restored)."""
    flags = {mp.TF32_FLAG: True}
    set_calls: list[dict[str, bool]] = []

    def get_flags(names: list[str]) -> dict[str, bool]:
        return {n: flags[n] for n in names}

    def set_flags(values: dict[str, bool]) -> None:
        set_calls.append(values)
        flags.update(values)

    controls = mp.tf32_controls(types.SimpleNamespace(), get_flags, set_flags)
    assert [c.name for c in controls] == [mp.TF32_FLAG]
    registered, on_revert = _recorder()
    mp.set_tf32(controls, False, on_revert)
    assert set_calls == [{mp.TF32_FLAG: False}]
    registered[0][0]()
    assert flags[mp.TF32_FLAG] is True


def test_switches_of_this_cpu_build() -> None:
    """What the real build exposes: 3.3.1 binds the switch even on CPU, 2.6.2 does not; no
    CPU build registers FLAGS_cublas_allow_tf32 (paddle.get_flags refuses it)."""
    core = mp._core(paddle)
    names = [c.name for c in mp.tf32_controls(core, paddle.get_flags, paddle.set_flags)]
    expected = ["core.set_cublas_switch"] if hasattr(core, "set_cublas_switch") else []
    assert names == expected
    if names:
        assert mp.tf32_controls(core)[0].get() is False  # CPU: never TF32


# -- the comparison with torch ---------------------------------------------------------------
def _ulps(out: np.ndarray, ref64: np.ndarray) -> float:
    """Largest error in units of the float32 spacing at the exact value."""
    spacing = np.spacing(np.abs(ref64).astype(F4)).astype(F8)
    return float(np.max(np.abs(out.astype(F8) - ref64) / spacing))


@pytest.mark.parametrize("scale", SCALES)
def test_float64_mode_beats_torch_float32(clean, scale: float) -> None:
    """On the same inputs, float64 mode's error to the float64 product is <= torch float32's
    (forward and gradient), and within half a float32 ulp."""
    rng = np.random.default_rng(5)
    a = (rng.standard_normal((32, 768)) * scale).astype(F4)
    b = (rng.standard_normal((768, 768)) * scale).astype(F4)
    g = rng.standard_normal((32, 768)).astype(F4)
    ref = a.astype(F8) @ b.astype(F8)
    ref_grad = g.astype(F8) @ b.astype(F8).T

    ta = torch.tensor(a, requires_grad=True)
    tout = ta @ torch.tensor(b)
    tout.backward(torch.tensor(g))
    torch_err, torch_grad_err = _ulps(tout.detach().numpy(), ref), _ulps(ta.grad.numpy(), ref_grad)

    _float64_mode()
    pa = paddle.to_tensor(a, stop_gradient=False)
    pout = pa @ paddle.to_tensor(b)
    (pout * paddle.to_tensor(g)).sum().backward()
    err, grad_err = _ulps(pout.numpy(), ref), _ulps(pa.grad.numpy(), ref_grad)
    assert err <= 0.5 + 1e-6 and grad_err <= 0.5 + 1e-6, (err, grad_err)
    assert err <= torch_err and grad_err <= torch_grad_err, (err, torch_err, grad_err, torch_grad_err)


def test_no_stale_reference_warning(clean) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", paddlefix.PaddlefixWarning)
        _float64_mode()


@pytest.mark.parametrize(
    "mode, tf32, present, text",
    [
        ("highest", True, True, "cuBLAS TF32 on (core.set_cublas_switch); mode 'highest' wants it off"),
        ("highest", False, False, "cuBLAS TF32 off (core.set_cublas_switch); nothing to change"),
        ("high", False, True, "mode 'high' wants it on"),
        ("medium", True, False, "nothing to change for mode 'medium'"),
        ("float64", False, True, "float32 matmuls to compute in float64; cuBLAS TF32 off"),
        ("highest", None, False, "GPU build without a cuBLAS TF32 switch"),
    ],
)
def test_probe_verdict_on_a_gpu_build(mode: str, tf32: bool | None, present: bool, text: str) -> None:
    """The probe's decision from the TF32 state it reads (the reading is the switch test above)."""
    finding = mp.describe(mode, True, tf32, ["core.set_cublas_switch"] if tf32 is not None else [])
    assert finding.present is present and text in finding.detail


def test_disabled_by_environment_warns(clean, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PADDLEFIX_DISABLE", "matmul_precision")
    original = paddle.matmul
    with pytest.warns(paddlefix.PaddlefixWarning, match="recorded but not in effect"):
        paddlefix.set_float32_matmul_precision("float64")
    assert paddle.matmul is original
    assert paddlefix.status()["matmul_precision"].state == "disabled"
    assert paddlefix.get_float32_matmul_precision() == "float64"


def test_wrapped_functions_still_pickle(clean) -> None:
    """Wrappers sit where the originals were found, so pickling by reference still works."""
    import pickle

    _float64_mode()
    for fn in (paddle.matmul, paddle.mm, paddle.bmm, paddle.einsum, paddle.nn.functional.linear):
        assert pickle.loads(pickle.dumps(fn)) is fn
