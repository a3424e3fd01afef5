"""backprop_lab: an instrumented autodiff engine for learning how backpropagation works.

    import backprop_lab as bl
    w = bl.tensor(0.5, requires_grad=True)
    loss = bl.sin(w ** 2) ** 3
    loss.backward()
    w.grad            # d loss / d w

Reverse mode (``Tensor.backward``, :func:`grad`, :func:`vjp`), forward mode (:func:`jvp`),
full Jacobians either way (:func:`jacobian`), and :func:`gradcheck` against finite
differences. Every op's rules are in :mod:`backprop_lab.ops` (``bl.REGISTRY``).
"""

from . import data, nn, optim
from .backend import BackendError, backend_info, to_numpy, use_backend
from .functional import (
    concatenate,
    cos,
    cross_entropy,
    exp,
    log,
    log_softmax,
    matmul,
    max,
    maximum,
    mean,
    mse,
    relu,
    reshape,
    sigmoid,
    sin,
    softmax,
    stack,
    sum,
    tanh,
    transpose,
    where,
)
from .gradcheck import GradcheckError, GradcheckReport, gradcheck
from .instrument.anomaly import AnomalyError, detect_anomaly
from .instrument.checkpoint import checkpoint, checkpoint_sequential
from .instrument.counters import count
from .instrument.draw import draw_graph
from .instrument.memory import measure_memory
from .instrument.widgets import replay_widget
from .ops import REGISTRY
from .tensor import (
    DtypeError,
    GraphFreedError,
    ShapeError,
    Tensor,
    enable_grad,
    is_grad_enabled,
    no_grad,
    tensor,
    zero_grad,
)
from .trace import Trace, trace
from .transforms import grad, jacobian, jvp, value_and_grad, vjp

__version__ = "0.1.0"

__all__ = [
    "data",
    "nn",
    "optim",
    "AnomalyError",
    "BackendError",
    "DtypeError",
    "GradcheckError",
    "GradcheckReport",
    "GraphFreedError",
    "REGISTRY",
    "ShapeError",
    "Tensor",
    "Trace",
    "backend_info",
    "checkpoint",
    "checkpoint_sequential",
    "concatenate",
    "cos",
    "count",
    "cross_entropy",
    "detect_anomaly",
    "draw_graph",
    "enable_grad",
    "exp",
    "grad",
    "gradcheck",
    "is_grad_enabled",
    "jacobian",
    "jvp",
    "log",
    "log_softmax",
    "matmul",
    "max",
    "maximum",
    "mean",
    "measure_memory",
    "mse",
    "no_grad",
    "relu",
    "replay_widget",
    "reshape",
    "sigmoid",
    "sin",
    "softmax",
    "stack",
    "sum",
    "tanh",
    "tensor",
    "to_numpy",
    "trace",
    "transpose",
    "use_backend",
    "value_and_grad",
    "vjp",
    "where",
    "zero_grad",
]
