"""backprop_lab: an instrumented autodiff engine for learning how backpropagation works.

    import backprop_lab as bl
    w = bl.tensor(0.5, requires_grad=True)
    loss = bl.sin(w ** 2) ** 3
    loss.backward()
    w.grad            # d loss / d w

Reverse mode (``Tensor.backward``, :func:`grad`, :func:`vjp`), forward mode (:func:`jvp`),
full Jacobians either way (:func:`jacobian`), and :func:`gradcheck` against finite
differences. Every op's rules are in :mod:`backprop_lab.ops` (``bl.REGISTRY``); the op
functions below (``bl.exp``, ``bl.sum``, ...) are generated from it.
"""

from . import data, functional, nn, optim
from . import trace as _trace_module  # noqa: F401 - the old path, loaded before bl.trace is bound
from .backend import BackendError, backend_info, to_numpy, use_backend
from .compile import CompileError, compile
from .gradcheck import GradcheckError, GradcheckReport, gradcheck
from .instrument.anomaly import AnomalyError, detect_anomaly
from .instrument.checkpoint import checkpoint, checkpoint_sequential
from .instrument.counters import count
from .instrument.draw import draw_graph
from .instrument.memory import measure_memory
from .instrument.trace import Trace, trace
from .instrument.widgets import replay_widget
from .ops import REGISTRY, LabelError
from .tensor import (
    ArgumentError,
    AxisError,
    DtypeError,
    GraphFreedError,
    HigherOrderError,
    HookError,
    InPlaceError,
    ShapeError,
    Tensor,
    apply,
    enable_grad,
    is_grad_enabled,
    no_grad,
    tensor,
    zero_grad,
)
from .transforms import grad, jacobian, jvp, value_and_grad, vjp

globals().update({name: getattr(functional, name) for name in functional.__all__})

__version__ = "0.1.0"

__all__ = [
    "data",
    "nn",
    "optim",
    "AnomalyError",
    "ArgumentError",
    "AxisError",
    "BackendError",
    "CompileError",
    "DtypeError",
    "GradcheckError",
    "GradcheckReport",
    "GraphFreedError",
    "HigherOrderError",
    "HookError",
    "InPlaceError",
    "LabelError",
    "REGISTRY",
    "ShapeError",
    "Tensor",
    "Trace",
    "apply",
    "backend_info",
    "checkpoint",
    "checkpoint_sequential",
    "compile",
    "count",
    "detect_anomaly",
    "draw_graph",
    "enable_grad",
    "grad",
    "gradcheck",
    "is_grad_enabled",
    "jacobian",
    "jvp",
    "measure_memory",
    "no_grad",
    "replay_widget",
    "tensor",
    "to_numpy",
    "trace",
    "use_backend",
    "value_and_grad",
    "vjp",
    "zero_grad",
    *functional.__all__,  # the op functions: bl.exp, bl.sum, bl.softmax, ...
]
