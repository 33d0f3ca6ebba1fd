"""``record``: trace the torch side once into a file; ``compare`` reads it later without torch.

For two machines or two environments: where torch runs, ``align.record(torch_model, inputs,
"torch_run.npz", loss=..., optimizer=..., steps=...)``; where the port runs,
``align.compare(paddle_model, "torch_run.npz", inputs, loss=paddle_loss, optimizers=paddle_opt,
steps=...)``. The file is pickle-free (written by ``save_trace``). Besides the trace it notes how
the run was made (steps, train mode, loss and optimizer present, a digest of the inputs), so a
comparison made with other inputs or settings is refused instead of reporting nonsense.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, Callable

from ._errors import AlignError

if TYPE_CHECKING:
    from ._trace import Trace

__all__ = ["record", "load_record", "RECORD_KEY"]

#: The entry of ``Trace.versions`` that describes how a recorded run was made (a JSON object).
RECORD_KEY = "paddlefix.align.record"


def record(
    torch_model: Any,
    inputs: Any,
    path: str | os.PathLike,
    *,
    loss: Callable[[Any, Any], Any] | None = None,
    optimizer: Any = None,
    steps: int = 1,
    train: bool = False,
) -> "Trace":
    """Trace ``torch_model`` on ``inputs`` and write the trace to ``path``; returns the trace.

    Args:
        torch_model: a ``torch.nn.Module``.
        inputs: as for :func:`compare` (a batch, a list of batches, or a fakedata file path).
        path: where to write (overwritten if it exists).
        loss: ``fn(outputs, batch) -> scalar`` (the torch one).
        optimizer: the torch optimizer; ``steps`` real steps are recorded.
        steps: as for :func:`compare` (more than one needs ``optimizer``).
        train: train mode (default eval).

    Raises:
        AlignError: bad arguments, named.
    """
    from ._capture import capture
    from ._compare import _framework, convert_batch, inputs_digest, normalize_inputs
    from ._tracefile import save_trace

    if _framework(torch_model) != "torch":
        raise AlignError(f"torch_model must be a torch.nn.Module; got {type(torch_model).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise AlignError(f"path must be a file path; got {type(path).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise AlignError(f"steps must be a positive int; got {steps!r}")
    if steps > 1 and optimizer is None:
        raise AlignError(f"steps={steps} needs an optimizer")
    if optimizer is not None and loss is None:
        raise AlignError("optimizer needs loss=fn(outputs, batch) to compute gradients")
    if loss is not None and not callable(loss):
        raise AlignError(f"loss must be callable fn(outputs, batch) -> scalar; got {type(loss).__name__}")
    batches = normalize_inputs(inputs, steps)
    trace = capture(
        torch_model, [convert_batch(b, "torch") for b in batches], loss_fn=loss, optimizer=optimizer,
        steps=steps, train=bool(train), loss_arg="loss",
    )
    meta = {
        "steps": steps,
        "train": bool(train),
        "loss": loss is not None,
        "optimizer": optimizer is not None,
        "n_batches": len(batches),
        "inputs_sha256": inputs_digest(batches),
    }
    trace = trace._replace(versions={**trace.versions, RECORD_KEY: json.dumps(meta, sort_keys=True)})
    save_trace(trace, path, overwrite=True)
    return trace


def load_record(
    path: str | os.PathLike, batches: list[Any], *, loss: bool, optimizer: bool, steps: int, train: bool
) -> "Trace":
    """The torch trace in ``path``, checked against how ``compare`` is about to run the Paddle side."""
    from ._compare import inputs_digest
    from ._tracefile import load_trace

    try:
        trace = load_trace(path)
    except (OSError, ValueError) as exc:
        raise AlignError(f"torch_model: cannot read the record {os.fspath(path)!r}: {exc}") from exc
    if trace.framework != "torch":
        raise AlignError(f"torch_model: {os.fspath(path)!r} holds a {trace.framework} trace, not a torch one")
    raw = trace.versions.get(RECORD_KEY)
    if raw is None:
        return trace  # a trace saved by other means: nothing to check against
    meta = json.loads(raw)
    asked = {"steps": steps, "train": train, "loss": loss, "optimizer": optimizer}
    wrong = [f"{k}={asked[k]!r} (recorded with {meta.get(k)!r})" for k in asked if meta.get(k) != asked[k]]
    if wrong:
        raise AlignError(f"compare does not match the record {os.fspath(path)!r}: " + ", ".join(wrong))
    if meta.get("inputs_sha256") != inputs_digest(batches):
        raise AlignError(
            f"inputs: not the batches {os.fspath(path)!r} was recorded with (their digest differs); "
            "pass the same inputs, e.g. the same fakedata file"
        )
    return trace
