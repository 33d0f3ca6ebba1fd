"""``compare`` / ``assert_aligned``: run a Paddle port and its PyTorch original side by side.

Both models are traced on the same inputs (:mod:`._capture`), then the two traces are compared
along the layer pairing (``diff_traces``), which finds the module that introduces a difference.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from ._errors import AlignError

if TYPE_CHECKING:
    from ._report import AlignResult
    from ._trace import Trace

__all__ = ["compare", "assert_aligned", "normalize_inputs", "convert_batch"]

log = logging.getLogger("paddlefix.align")

LossPair = Sequence[Callable[[Any, Any], Any]]


# --------------------------------------------------------------------------- inputs


def _is_batch_container(obj: Any) -> bool:
    return isinstance(obj, (Mapping, list, tuple))


def normalize_inputs(inputs: Any, steps: int) -> list[Any]:
    """The batches as a list (one per step, or one reused), as NumPy-holding trees.

    ``inputs`` is a fakedata file path, one batch, or a list of batches. A list counts as a list
    of batches when every element is itself a dict, list or tuple (a batch); otherwise it is one
    batch of positional arguments.
    """
    from .. import fakedata

    if isinstance(inputs, (str, os.PathLike)):
        try:
            batches = fakedata.load(inputs, to="numpy")
        except (OSError, ValueError, TypeError) as exc:
            raise AlignError(f"inputs: cannot read the fakedata file {os.fspath(inputs)!r}: {exc}") from exc
    elif isinstance(inputs, list) and inputs and all(_is_batch_container(b) for b in inputs):
        batches = list(inputs)
    else:
        batches = [inputs]
    if inputs is None or (isinstance(inputs, (list, tuple, Mapping)) and len(inputs) == 0):
        raise AlignError(f"inputs must be a batch, a list of batches or a fakedata file path; got {inputs!r}")
    if len(batches) not in (1, steps):
        if len(batches) > steps:
            batches = batches[:steps]  # a longer fakedata file: its first batches
        else:
            raise AlignError(
                f"inputs holds {len(batches)} batches for steps={steps}; give one batch (reused every step) "
                "or one per step"
            )
    return batches


def convert_batch(batch: Any, to: str, where: str = "inputs") -> Any:
    """``batch`` with every array / tensor rebuilt for ``to`` (``"paddle"``, ``"torch"`` or ``"numpy"``)
    exactly as ``fakedata.load`` rebuilds captured batches: same nesting, dtypes (ids stay int64),
    shapes and bits."""
    from .. import fakedata

    encoder = fakedata._Encoder()
    try:
        node = encoder.node(batch, where)
    except TypeError as exc:
        raise AlignError(f"inputs: {exc}") from exc
    arrays = {f"a{i}": a for i, a in enumerate(encoder.arrays)}
    make = fakedata._MAKERS[to]()

    def build(n: dict, at: str) -> Any:
        kind = n["t"]
        if kind == "value":
            return n["v"]
        if kind == "float":
            return float(n["v"])
        if kind == "list":
            return [build(x, f"{at}[{i}]") for i, x in enumerate(n["items"])]
        if kind == "tuple":
            return tuple(build(x, f"{at}[{i}]") for i, x in enumerate(n["items"]))
        if kind == "dict":
            return {k: build(x, f"{at}[{k!r}]") for k, x in n["items"]}
        return make(arrays[n["key"]], n["dtype"], n["origin"], at)

    try:
        return build(node, where)
    except TypeError as exc:
        raise AlignError(f"inputs: {exc}") from exc


def inputs_digest(batches: Sequence[Any]) -> str:
    """A SHA-256 over the batches' structure, dtypes, shapes and bytes (to check a record's inputs)."""
    import hashlib
    import json

    from .. import fakedata

    encoder = fakedata._Encoder()
    # Through NumPy first, so the same data held as torch, Paddle or NumPy values gives one digest.
    nodes = [encoder.node(convert_batch(b, "numpy"), f"batch[{i}]") for i, b in enumerate(batches)]
    h = hashlib.sha256(json.dumps(nodes, sort_keys=True, default=str).encode())
    for a in encoder.arrays:
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(a.tobytes() if a.dtype.kind not in "US" else a.astype(str).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- argument checks


def _pair_arg(value: Any, name: str, what: str, *, offline: bool) -> tuple[Any, Any]:
    """(paddle, torch) from a 2-tuple; with a record file only the Paddle one is needed."""
    if value is None:
        return None, None
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise AlignError(f"{name} must be a pair (paddle {what}, torch {what}); got {len(value)} items")
        return value[0], value[1]
    if offline:
        return value, None
    raise AlignError(f"{name} must be a pair (paddle {what}, torch {what}); got {type(value).__name__}")


def _framework(obj: Any) -> str | None:
    from .adapters import framework_of

    return framework_of(obj)


def _progress(total: int) -> tuple[Callable[[], None] | None, Callable[[], None]]:
    """A tqdm bar on a terminal for runs of several steps: (update, close)."""
    if total <= 2 or not getattr(sys.stderr, "isatty", lambda: False)():
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bar = tqdm(total=total, desc="align.compare", unit="step", leave=False, file=sys.stderr)
    return (lambda: bar.update(1)), bar.close


# --------------------------------------------------------------------------- compare


def compare(
    paddle_model: Any,
    torch_model: Any,
    inputs: Any,
    *,
    loss: LossPair | None = None,
    optimizers: Sequence[Any] | None = None,
    steps: int = 1,
    train: bool = False,
    tolerance: Any = None,
    mapping: Any = None,
    transfer: bool = False,
) -> "AlignResult":
    """Run ``paddle_model`` and ``torch_model`` on the same inputs and compare them layer by layer.

    Args:
        paddle_model: the port, a ``paddle.nn.Layer``.
        torch_model: the original, a ``torch.nn.Module``; or the path of a file written by
            :func:`paddlefix.align.record` (then torch is not needed, nor imported).
        inputs: one batch, a list of batches (one per step), or a ``fakedata`` file path. A batch
            holds NumPy arrays, Paddle or torch tensors and Python values, nested in dicts, tuples
            and lists; each side gets its own tensors as ``fakedata.load`` builds them (ids stay
            int64). A dict is passed as keyword arguments, a tuple / list as positional ones,
            anything else as the one argument.
        loss: ``(paddle_fn, torch_fn)``, each ``fn(outputs, batch) -> scalar``: then the loss, the
            gradients w.r.t. every module output and every parameter are compared too.
        optimizers: ``(paddle_optimizer, torch_optimizer)`` over the two models' parameters; each
            of the ``steps`` steps then runs a real optimizer step and the parameters after it are
            compared. Any optimizer.
        steps: how many steps (more than one needs ``optimizers``).
        train: run both in train mode (default: eval mode). Dropout then draws from each
            framework's own random stream unless shared randomness is available.
        tolerance: ``None`` (per-dtype defaults as ``torch.testing.assert_close``), ``(rtol, atol)``
            or ``"reprod"``.
        mapping: name mapping for the pairing (and the transfer), as in :func:`transfer`.
        transfer: copy the torch weights into the Paddle model first (otherwise no weight changes).

    Returns:
        An :class:`AlignResult`: ``print`` it, or look at ``result.first_divergence``.

    Raises:
        AlignError: bad arguments (the message names the argument), a loss that is not a scalar,
            or a model that raised inside forward (names the framework and the module path).
    """
    from ._diff import diff_traces
    from ._metrics import check_tolerance

    check_tolerance(tolerance)  # AlignError naming the argument
    trace_pd, trace_pt, pairing, context = _run(
        paddle_model, torch_model, inputs, loss=loss, optimizers=optimizers, steps=steps, train=train,
        mapping=mapping, transfer=transfer,
    )
    result = diff_traces(trace_pd, trace_pt, pairing, tolerance=tolerance, context=context)
    # The last step's parameters were read in place (no copy of the models); what the result keeps
    # of them is copied now, once the traces' other arrays are released.
    live = {id(a) for tr in (trace_pd, trace_pt) if tr.steps for a in tr.steps[-1].params_after.values()}
    del trace_pd, trace_pt
    _copy_shared(result, live)
    return result


def _copy_shared(result: Any, live: set[int]) -> None:
    """Replace every array of ``result`` that shares memory with a live parameter by a copy."""
    from ._capture import owns_memory

    arrays = getattr(result, "_arrays", None)
    if not live or not isinstance(arrays, dict):
        return
    for entry in arrays.values():
        for side in entry[:2] if isinstance(entry, tuple) else ():
            if isinstance(side, dict):
                for key, value in side.items():
                    if hasattr(value, "base") and not owns_memory(value, live):
                        side[key] = value.copy()


def assert_aligned(
    paddle_model: Any,
    torch_model: Any,
    inputs: Any,
    **kwargs: Any,
) -> "AlignResult":
    """:func:`compare`, raising ``AssertionError`` (whose message is the result's table) unless aligned.

    Takes the same arguments as :func:`compare`; returns the result when aligned.
    """
    result = compare(paddle_model, torch_model, inputs, **kwargs)
    if not result.ok:
        raise AssertionError("paddle and torch models are not aligned\n" + str(result))
    return result


def _run(
    paddle_model: Any,
    torch_model: Any,
    inputs: Any,
    *,
    loss: Any,
    optimizers: Any,
    steps: int,
    train: bool,
    mapping: Any,
    transfer: bool,
) -> "tuple[Trace, Trace, Any, Any]":
    from ._capture import capture

    offline = isinstance(torch_model, (str, os.PathLike))
    if torch_model is None:
        raise AlignError("torch_model must be a torch.nn.Module or the path of a file written by align.record; got None")
    fw = _framework(paddle_model)
    if fw != "paddle":
        hint = " (the arguments look swapped: the Paddle model comes first)" if fw == "torch" else ""
        raise AlignError(f"paddle_model must be a paddle.nn.Layer; got {type(paddle_model).__name__}{hint}")
    if not offline and _framework(torch_model) != "torch":
        raise AlignError(
            "torch_model must be a torch.nn.Module or the path of a file written by align.record; "
            f"got {type(torch_model).__name__}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AlignError(f"steps must be a positive int; got {steps!r}")
    if not isinstance(train, bool):
        raise AlignError(f"train must be True or False; got {train!r}")
    if not isinstance(transfer, bool):
        raise AlignError(f"transfer must be True or False; got {transfer!r}")
    loss_pd, loss_pt = _pair_arg(loss, "loss", "loss function", offline=offline)
    opt_pd, opt_pt = _pair_arg(optimizers, "optimizers", "optimizer", offline=offline)
    for fn, side in ((loss_pd, "paddle"), (loss_pt, "torch")):
        if fn is not None and not callable(fn):
            raise AlignError(f"loss: the {side} loss function is not callable; got {type(fn).__name__}")
    if steps > 1 and optimizers is None:
        raise AlignError(f"steps={steps} needs optimizers=(paddle_optimizer, torch_optimizer)")
    if optimizers is not None and loss is None:
        raise AlignError("optimizers need loss=(paddle_loss_fn, torch_loss_fn) to compute gradients")
    if not offline and (loss_pd is None) != (loss_pt is None):
        raise AlignError("loss: give both loss functions (paddle_fn, torch_fn), or none")
    if not offline and (opt_pd is None) != (opt_pt is None):
        raise AlignError("optimizers: give both optimizers (paddle_optimizer, torch_optimizer), or none")

    batches = normalize_inputs(inputs, steps)

    recorded: Trace | None = None
    if offline:
        recorded = _load_record(torch_model, batches, loss=loss_pd, optimizer=opt_pd, steps=steps, train=train)

    if transfer:
        from ._transfer import transfer as do_transfer

        source: Any = recorded.params_before if recorded is not None else torch_model
        do_transfer(source, paddle_model, mapping=mapping)

    pairing = _pairing(paddle_model, recorded.params_before if recorded is not None else torch_model, mapping)
    if not pairing.pairs:
        raise AlignError(
            "paddle_model and torch_model could not be paired (no layer of one corresponds to a layer of the "
            "other); pass mapping= to rename torch names, or check the models:\n" + str(pairing)
        )

    update, close = _progress(steps * (1 if offline else 2))
    shared = False
    try:
        runs, shared = _randomness(paddle_model, None if offline else torch_model, train)
        with runs:
            trace_pd = capture(
                paddle_model, [convert_batch(b, "paddle") for b in batches], loss_fn=loss_pd, optimizer=opt_pd,
                steps=steps, train=train, progress=update, loss_arg="loss", share_last=True,
            )
            if recorded is None:
                trace_pt = capture(
                    torch_model, [convert_batch(b, "torch") for b in batches], loss_fn=loss_pt, optimizer=opt_pt,
                    steps=steps, train=train, progress=update, loss_arg="loss", share_last=True,
                )
            else:
                trace_pt = recorded
    finally:
        close()
    return trace_pd, trace_pt, pairing, _context(batches, train, shared)


def _context(batches: list[Any], train: bool, shared: bool) -> Any:
    """What the hints need to know about the run besides the traces."""
    import numpy as np

    import paddlefix

    from ._diff import HintContext

    state = paddlefix.status()
    matmul = state.get("matmul_precision")
    precision = paddlefix.get_float32_matmul_precision() if matmul is not None and matmul.state == "applied" else None
    ce = state.get("cross_entropy")
    labels = False
    for batch in batches:
        for leaf in _leaves(batch):
            arr = leaf if isinstance(leaf, np.ndarray) else None
            if arr is None and hasattr(leaf, "numpy") and "int" in str(getattr(leaf, "dtype", "")):
                arr = np.asarray(leaf.numpy() if not hasattr(leaf, "detach") else leaf.detach().cpu().numpy())
            if arr is not None and arr.dtype.kind == "i" and arr.size and (arr == -100).any():
                labels = True
    return HintContext(
        train=train, shared_randomness=shared, matmul_precision=precision,
        cross_entropy_patched=None if ce is None else ce.state == "applied", ignore_index_labels=labels,
    )


def _leaves(obj: Any) -> list[Any]:
    if isinstance(obj, Mapping):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, (list, tuple)):
        return [x for v in obj for x in _leaves(v)]
    return [obj]


def _pairing(paddle_model: Any, other: Any, mapping: Any) -> Any:
    """The pairing, torch side first so ``mapping`` rewrites torch names (as in ``transfer``)."""
    from ._errors import TransferError
    from ._pairing import pair

    try:
        return pair(other, paddle_model, mapping=mapping)
    except TransferError as exc:
        raise AlignError(f"paddle_model and torch_model cannot be paired: {exc}") from exc


class _NoRandomness:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> None:
        return None


def _randomness(paddle_model: Any, torch_model: Any, train: bool) -> tuple[Any, bool]:
    """The context both runs happen in, and whether it shares randomness: in train mode both models
    draw their dropout masks from one stream (``same_randomness``)."""
    if not train or torch_model is None:
        return _NoRandomness(), False
    from ._randomness import same_randomness

    return same_randomness(seed=0, models=(paddle_model, torch_model)), True


def _load_record(path: Any, batches: list[Any], *, loss: Any, optimizer: Any, steps: int, train: bool) -> "Trace":
    from ._record import load_record

    return load_record(path, batches, loss=loss is not None, optimizer=optimizer is not None, steps=steps, train=train)
