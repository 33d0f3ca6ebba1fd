"""What one framework's run recorded, framework-neutral (NumPy arrays and plain Python only).

``compare`` traces the Paddle model and the torch model into one :class:`Trace` each and then
compares the two traces along the pairing; ``record`` writes a torch :class:`Trace` to a file so
the comparison can run later, elsewhere, without torch. Nothing here imports a framework.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ModuleInfo", "ForwardEvent", "GradEvent", "StepTrace", "Trace"]


class ModuleInfo(NamedTuple):
    """One layer of the traced model, in registration order."""

    path: str
    """Dotted path in the model ("" is the root)."""
    type: str
    """Class name (``Linear``, ``BertLayer``, ...)."""
    config: dict[str, Any]
    """Configuration attributes the rules table compares (eps, momentum, approximate, p, ...)."""


class ForwardEvent(NamedTuple):
    """One call of one module during the forward pass, in execution (completion) order."""

    path: str
    call: int
    """0 for the first call of this module in the step, 1 for the second (shared modules), ..."""
    inputs: list["np.ndarray"]
    """Every floating / integer tensor among the call's positional and keyword inputs, flattened in order."""
    outputs: list["np.ndarray"]
    """Every tensor in the call's output, flattened in order (dicts by key order, tuples in order)."""


class GradEvent(NamedTuple):
    """Gradient of the loss w.r.t. one module call's outputs, in the order backward produced them."""

    path: str
    call: int
    grads: list["np.ndarray | None"]
    """One entry per tensor of :attr:`ForwardEvent.outputs` (None where no gradient flowed)."""


class StepTrace(NamedTuple):
    """One step: forward, and where a loss is given, backward and the optimizer step."""

    forward: list[ForwardEvent]
    output: list["np.ndarray"]
    """The model's output tensors, flattened as in :class:`ForwardEvent`."""
    loss: float | None
    grads: list[GradEvent]
    param_grads: dict[str, "np.ndarray | None"]
    """Full parameter name (the framework's own naming) -> gradient after backward, in that framework's layout."""
    params_after: dict[str, "np.ndarray"]
    """Full parameter name -> value after the optimizer step (empty without an optimizer)."""


class Trace(NamedTuple):
    """One framework's whole run."""

    framework: str
    """``"paddle"`` or ``"torch"``."""
    versions: dict[str, str]
    """Distribution versions (framework, transformers / paddlenlp, paddlefix)."""
    modules: list[ModuleInfo]
    params_before: dict[str, "np.ndarray"]
    """Full parameter name -> value before the first step."""
    optimizer: dict[str, Any]
    """The optimizer's class name and hyper-parameters (lr, eps / epsilon, weight decay, betas, decayed
    parameter names), as the framework exposes them; empty without an optimizer."""
    steps: list[StepTrace]
