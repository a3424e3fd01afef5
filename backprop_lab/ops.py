r"""Every differentiable op, defined once: forward, VJP, JVP and the formulas the book shows.

Each op is a small class used as a namespace (no instances)::

    @register(formula=..., vjp_formula=..., jvp_formula=..., doc=..., flops="elementwise")
    class mul:
        def forward(xp, x, y):                 # -> (output, saved for backward)
        def vjp(xp, g, saved, needs):          # upstream g -> one gradient per input
        def jvp(xp, tangents, inputs, out):    # input tangents -> output tangent

``xp`` is the array namespace of the inputs (NumPy, CuPy or array-API); rules never
import NumPy. ``needs[i]`` says whether input ``i`` wants a gradient, so a rule skips work
nobody asked for (``None`` in that slot). ``saved`` is exactly what the backward reads:
that is what the graph keeps alive until backward runs.

The entry is all there is to an op. From it follow the public function ``bl.<name>`` (its
signature is ``forward``'s without ``xp``; an op whose public form differs, such as
``bl.reshape(x, 2, 3)``, writes it as ``call``), the Tensor methods and operators it lists,
and its FLOP count (``flops``: a kind from :mod:`backprop_lab.instrument.counters`).
Registering an op again under the same name (re-running a notebook cell) replaces it.

In the formulas, :math:`\bar z` is the upstream gradient :math:`\partial L/\partial z`
(a row vector: backprop multiplies it by Jacobians from the right), :math:`\dot x` a tangent
pushed forward, and :math:`\odot` the elementwise product.
"""

from __future__ import annotations

import inspect
import math
import operator
from collections.abc import Callable, Sequence
from typing import Any

from .backend import device_kwargs, dtype_kind, masked, scatter_add
from .tensor import (
    ArgumentError,
    AxisError,
    EngineError,
    ShapeError,
    Tensor,
    apply,
    binary_call,
    unary_call,
)

__all__ = ["Op", "REGISTRY", "register", "unbroadcast", "FLOP_KINDS", "LabelError"]

FLOP_KINDS = ("elementwise", "matmul", "reduction", "movement")


class LabelError(EngineError, ValueError):
    """Class labels that do not fit the logits (out of range, negative, not integers)."""


class Op:
    """One registry entry. ``diff_inputs``: indices of inputs that can carry gradients.

    ``function`` is the public function (``bl.<name>``); calling the Op calls it.
    """

    __slots__ = ("name", "forward", "vjp", "jvp", "formula", "vjp_formula", "jvp_formula",
                 "doc", "diff_inputs", "shape_hint", "flops", "function", "methods",
                 "operators", "public")  # fmt: skip

    def __init__(self, name, forward, vjp, jvp, formula, vjp_formula, jvp_formula, doc,
                 diff_inputs, shape_hint, flops="movement") -> None:  # fmt: skip
        self.name = name
        self.forward = forward
        self.vjp = vjp
        self.jvp = jvp
        self.formula = formula
        self.vjp_formula = vjp_formula
        self.jvp_formula = jvp_formula
        self.doc = doc
        self.diff_inputs = diff_inputs
        self.shape_hint = shape_hint
        self.flops = flops
        self.function: Callable[..., Tensor] | None = None
        self.methods: tuple[str, ...] = ()
        self.operators: tuple[str, ...] = ()
        self.public = False

    def __call__(self, *args: Any, **params: Any) -> Tensor:
        if self.function is None:
            return apply(self, *args, **params)
        return self.function(*args, **params)

    def __repr__(self) -> str:
        return f"<Op {self.name}>"


REGISTRY: dict[str, Op] = {}
_BUILTIN: set[str] = set()  # ops defined in this file (filled at the end of the module)
_ON_REGISTER: list[Callable[[Op], None]] = []  # backprop_lab.functional installs wrappers


class _AllInputs:
    """``diff_inputs`` of ops whose every input can carry a gradient."""

    def __contains__(self, i: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "all"


_ALL = _AllInputs()


def register(
    *,
    formula: str,
    vjp_formula: str,
    jvp_formula: str,
    doc: str,
    flops: str | Callable[..., int] | None = None,
    diff_inputs: tuple[int, ...] | None = None,
    public: bool = True,
    methods: Sequence[str] = (),
    operators: Sequence[str] = (),
    replace: bool = False,
) -> Callable[[type], Op]:
    """Class decorator: turn a namespace class with forward/vjp/jvp into a registered Op.

    ``flops`` is one of :data:`FLOP_KINDS` or a function ``(inputs, output) -> int``.
    ``public`` makes ``bl.<name>`` (built-in ops) and the op object itself callable;
    ``methods`` names Tensor methods (``("sum",)`` gives ``t.sum()``), ``operators`` Tensor
    operators (``("__add__", "__radd__")``). A built-in op can only be replaced with
    ``replace=True``; an op you registered before is simply replaced.
    """

    def wrap(cls: type) -> Op:
        name = cls.__name__
        missing = [f for f in ("forward", "vjp", "jvp") if not callable(getattr(cls, f, None))]
        if missing:
            raise TypeError(f"op {name} lacks {', '.join(missing)}")
        if flops is None:
            raise TypeError(
                f"op {name} lacks flops=: say how many floating-point operations it costs, "
                f"as one of {', '.join(FLOP_KINDS)} or a function (inputs, output) -> int, "
                "so that bl.count() never counts it as 0 by mistake"
            )
        if not callable(flops) and flops not in FLOP_KINDS:
            raise ValueError(f"op {name}: flops={flops!r} is not one of {FLOP_KINDS}")
        if name in _BUILTIN and not replace:
            raise ValueError(
                f"op {name!r} is built in; give yours another name (or pass replace=True "
                "to replace the built-in rule for every caller)"
            )
        op = Op(name, cls.forward, cls.vjp, cls.jvp, formula, vjp_formula, jvp_formula, doc,
                _ALL if diff_inputs is None else frozenset(diff_inputs),
                getattr(cls, "shape_hint", None), flops)  # fmt: skip
        op.public = public
        op.methods = tuple(methods)
        op.operators = tuple(operators)
        op.function = _make_function(op, getattr(cls, "call", None))
        REGISTRY[name] = op
        for hook in _ON_REGISTER:
            hook(op)
        return op

    return wrap


def _make_function(op: Op, call: Callable[..., Any] | None) -> Callable[..., Tensor]:
    """The public function of ``op``: its own ``call`` (bound to the op), or one built
    from ``forward``'s signature (one or two tensors and no parameters take the engine's
    fast paths)."""
    if call is not None:
        sig = inspect.signature(call)

        def function(*args: Any, **kwargs: Any) -> Tensor:
            return call(op, *args, **kwargs)

        function.__signature__ = sig.replace(parameters=list(sig.parameters.values())[1:])
        function.__doc__ = call.__doc__ or op.doc
    else:
        params = list(inspect.signature(op.forward).parameters.values())[1:]  # drop xp
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty for p in params)
        if plain and len(params) == 1:
            function = unary_call(op)
        elif plain and len(params) == 2:
            function = binary_call(op)
        else:
            function = _generated_function(op, params)
        function.__doc__ = op.doc
    function.__name__ = function.__qualname__ = op.name
    function.__module__ = "backprop_lab"
    return function


def _generated_function(op: Op, params: list[inspect.Parameter]) -> Callable[..., Tensor]:
    """``def name(x, axis=None, keepdims=False): return apply(op, x, axis=axis, ...)``,
    written out (as dataclasses do) so that Python itself checks the arguments."""
    decl, pos, kw, defaults = [], [], [], {}
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            decl.append(f"*{p.name}")
            pos.append(f"*{p.name}")
        elif p.default is p.empty and p.kind is not p.KEYWORD_ONLY:
            decl.append(p.name)
            pos.append(p.name)
        else:
            if p.kind is p.KEYWORD_ONLY and not any(d.startswith("*") for d in decl):
                decl.append("*")
            defaults[f"_d_{p.name}"] = p.default
            decl.append(f"{p.name}=_d_{p.name}")
            kw.append(f"{p.name}={p.name}")
    src = (f"def {op.name}({', '.join(decl)}):\n"
           f"    return apply(op, {', '.join(pos + kw)})\n")  # fmt: skip
    namespace = {"apply": apply, "op": op, **defaults}
    exec(src, namespace)  # noqa: S102 - the source is built from a signature, not user text
    return namespace[op.name]


# --------------------------------------------------------------------------------------
# Shared helpers: broadcasting and axes are handled here once, not in every rule.
# --------------------------------------------------------------------------------------
def unbroadcast(xp: Any, g: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``g`` over the axes that broadcasting expanded, so it has ``shape`` again.

    If ``x`` of shape (3,) was added to a (4, 3) array, each x[j] fed 4 outputs, so its
    gradient is the sum of those 4 upstream values (fan-out sums).
    """
    gshape = g.shape
    if gshape == shape:
        return g
    lead = len(gshape) - len(shape)
    kept = tuple(lead + i for i, s in enumerate(shape) if s == 1 and gshape[lead + i] != 1)
    if not kept and 0 < lead < len(gshape):  # only leading axes were added (a bias row):
        summed = xp.sum(g, axis=tuple(range(lead)))  # a new array, already of ``shape``
        if summed.shape == tuple(shape):
            return summed
    axes = tuple(range(lead)) + kept
    summed = xp.sum(g, axis=axes, keepdims=True) if axes else g
    return xp.reshape(summed, tuple(shape))


def _shape(x: Any) -> tuple[int, ...]:
    return getattr(x, "shape", ())


def _tsum(xp: Any, a: Any, b: Any) -> Any:
    """Sum of two tangents where either may be None (a zero tangent)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _bcast(xp: Any, t: Any, shape: tuple[int, ...]) -> Any:
    """Broadcast a tangent to the output shape (elementwise ops broadcast their inputs)."""
    return t if tuple(t.shape) == tuple(shape) else xp.broadcast_to(t, tuple(shape))


def _axis_type_error(op: str, axis: Any) -> Exception:
    hint = ""
    if isinstance(axis, Tensor) or hasattr(axis, "shape"):
        hint = (" To compare two tensors elementwise use bl.maximum(x, y)." if op == "max"
                else " The second argument is the axis, not another tensor.")  # fmt: skip
    return ArgumentError(f"{op}: axis must be an int or a tuple of ints, not "
                         f"{type(axis).__name__}.{hint}")  # fmt: skip


def _axis(op: str, axis: Any, ndim: int) -> int:
    """One axis, range-checked and made non-negative (NumPy's rule: -ndim <= axis < ndim)."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        if hasattr(axis, "__index__") and getattr(axis, "shape", ()) == () \
                and not isinstance(axis, Tensor):  # fmt: skip
            axis = operator.index(axis)  # np.int64(1), a 0-d integer array
        else:
            raise _axis_type_error(op, axis)
    if not -ndim <= axis < ndim:
        raise AxisError(
            f"{op}: axis {axis} is out of bounds for a tensor of dimension {ndim}; "
            f"use an axis from {-ndim} to {ndim - 1}"
            if ndim
            else f"{op}: axis {axis} is out of bounds for a 0-d tensor (it has no axes; "
            "use axis=None)"
        )
    return axis % ndim


def _axes(op: str, axis: Any, ndim: int) -> tuple[int, ...]:
    """The axes a reduction runs over, sorted and non-negative (None means all)."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (tuple, list)):
        axes = tuple(sorted(_axis(op, a, ndim) for a in axis))
        if len(set(axes)) != len(axes):
            raise AxisError(f"{op}: duplicate value in axis={tuple(axis)}; name each axis once")
        return axes
    return (_axis(op, axis, ndim),)


def _expand_reduced(xp: Any, g: Any, axes: tuple[int, ...], keepdims: bool) -> Any:
    """Re-insert reduced axes (size 1) into ``g`` so it broadcasts against the input."""
    if keepdims or not axes:
        return g
    shape = list(g.shape)
    for a in axes:
        shape.insert(a, 1)
    return xp.reshape(g, tuple(shape))


def _binary_shape_hint(xs: Any, ys: Any, **_: Any) -> str:
    return (
        "Elementwise ops broadcast NumPy-style: shapes are aligned from the right and each "
        "pair of sizes must be equal or 1."
    )


def _size(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --------------------------------------------------------------------------------------
# Elementwise arithmetic
# --------------------------------------------------------------------------------------
@register(
    formula=r"z = x + y",
    vjp_formula=r"\bar x = \bar z,\quad \bar y = \bar z",
    jvp_formula=r"\dot z = \dot x + \dot y",
    doc="Addition: the gradient is copied unchanged to both inputs (the 'distributor').",
    flops="elementwise",
    public=False,
    operators=("__add__", "__radd__"),
)
class add:
    def forward(xp, x, y):
        return x + y, (getattr(x, "shape", ()), getattr(y, "shape", ()))

    def vjp(xp, g, saved, needs):
        xs, ys = saved
        return (
            (g if g.shape == xs else unbroadcast(xp, g, xs)) if needs[0] else None,
            (g if g.shape == ys else unbroadcast(xp, g, ys)) if needs[1] else None,
        )

    def jvp(xp, tangents, inputs, out):
        tx, ty = tangents
        shape = _shape(out)
        return _bcast(xp, _tsum(xp, tx, ty), shape)

    shape_hint = _binary_shape_hint


@register(
    formula=r"z = x - y",
    vjp_formula=r"\bar x = \bar z,\quad \bar y = -\bar z",
    jvp_formula=r"\dot z = \dot x - \dot y",
    doc="Subtraction.",
    flops="elementwise",
    public=False,
    operators=("__sub__", "__rsub__"),
)
class sub:
    def forward(xp, x, y):
        return x - y, (getattr(x, "shape", ()), getattr(y, "shape", ()))

    def vjp(xp, g, saved, needs):
        xs, ys = saved
        return (
            (g if g.shape == xs else unbroadcast(xp, g, xs)) if needs[0] else None,
            unbroadcast(xp, -g, ys) if needs[1] else None,
        )

    def jvp(xp, tangents, inputs, out):
        tx, ty = tangents
        return _bcast(xp, _tsum(xp, tx, None if ty is None else -ty), _shape(out))

    shape_hint = _binary_shape_hint


@register(
    formula=r"z = x \odot y",
    vjp_formula=r"\bar x = \bar z \odot y,\quad \bar y = \bar z \odot x",
    jvp_formula=r"\dot z = \dot x \odot y + x \odot \dot y",
    doc="Elementwise product: each input's gradient is scaled by the other input (the 'swapper').",
    flops="elementwise",
    public=False,
    operators=("__mul__", "__rmul__"),
)
class mul:
    def forward(xp, x, y):
        return x * y, (x, y)

    def vjp(xp, g, saved, needs):
        x, y = saved
        return (
            unbroadcast(xp, g * y, x.shape) if needs[0] else None,
            unbroadcast(xp, g * x, y.shape) if needs[1] else None,
        )

    def jvp(xp, tangents, inputs, out):
        tx, ty = tangents
        x, y = inputs
        return _bcast(
            xp, _tsum(xp, None if tx is None else tx * y, None if ty is None else x * ty), out.shape
        )

    shape_hint = _binary_shape_hint


@register(
    formula=r"z = x / y",
    vjp_formula=r"\bar x = \bar z / y,\quad \bar y = -\bar z \odot x / y^2",
    jvp_formula=r"\dot z = \dot x / y - x \odot \dot y / y^2",
    doc="Elementwise division.",
    flops="elementwise",
    public=False,
    operators=("__truediv__", "__rtruediv__"),
)
class div:
    def forward(xp, x, y):
        return x / y, (x, y)

    def vjp(xp, g, saved, needs):
        x, y = saved
        return (
            unbroadcast(xp, g / y, x.shape) if needs[0] else None,
            unbroadcast(xp, -g * x / (y * y), y.shape) if needs[1] else None,
        )

    def jvp(xp, tangents, inputs, out):
        tx, ty = tangents
        x, y = inputs
        a = None if tx is None else tx / y
        b = None if ty is None else -(x * ty) / (y * y)
        return _bcast(xp, _tsum(xp, a, b), out.shape)

    shape_hint = _binary_shape_hint


@register(
    formula=r"z = -x",
    vjp_formula=r"\bar x = -\bar z",
    jvp_formula=r"\dot z = -\dot x",
    doc="Negation.",
    flops="elementwise",
    public=False,
    operators=("__neg__",),
)
class neg:
    def forward(xp, x):
        return -x, ()

    def vjp(xp, g, saved, needs):
        return (-g,)

    def jvp(xp, tangents, inputs, out):
        return -tangents[0]


def _log(xp: Any, x: Any) -> Any:
    """log x, with log 0 taken as 0: callers use it only where x != 0 matters."""
    if isinstance(x, (int, float)):
        return math.log(x) if x > 0 else (float("nan") if x < 0 else 0.0)
    return xp.log(xp.where(x == 0, xp.ones_like(x), x))


def _pow_dx(xp: Any, x: Any, y: Any) -> Any:
    """d(x^y)/dx = y x^(y-1), and 0 where y = 0 (so d(x^0)/dx = 0 at x = 0, not 0 * inf)."""
    if isinstance(y, (int, float)):
        return y * x ** (y - 1) if y != 0 else xp.zeros_like(x)
    return y * x ** (y - xp.astype(y != 0, y.dtype))  # y = 0: 0 * x^0, never 0 * inf


def _pow_dy(xp: Any, x: Any, y: Any, z: Any) -> Any:
    """d(x^y)/dy = x^y log x, and 0 where x = 0 and y >= 0 (so d(0^y)/dy = 0, as PyTorch)."""
    d = z * _log(xp, x)
    if isinstance(x, (int, float)):
        return d
    if isinstance(y, (int, float)):
        if y < 0:
            return d
        zero_at_0 = x == 0
    else:
        zero_at_0 = (x == 0) & (y >= 0)
    return xp.where(zero_at_0, xp.zeros_like(d), d)


@register(
    formula=r"z = x^{y}",
    vjp_formula=r"\bar x = \bar z \odot y\, x^{y-1},\quad \bar y = \bar z \odot z \log x",
    jvp_formula=r"\dot z = \dot x \odot y\, x^{y-1} + \dot y \odot z \log x",
    doc="Power; the exponent may be a constant or a tensor (then x must be positive). "
    "At x = 0 the derivatives follow PyTorch: d(x^0)/dx = 0 and d(0^y)/dy = 0 for y >= 0.",
    flops="elementwise",
    public=False,
    operators=("__pow__", "__rpow__"),
)
class pow:  # noqa: A001 - the op's name is the operator's name
    def forward(xp, x, y):
        z = x**y
        return z, (x, y, z)

    def vjp(xp, g, saved, needs):
        x, y, z = saved
        gx = unbroadcast(xp, g * _pow_dx(xp, x, y), _shape(x)) if needs[0] else None
        gy = unbroadcast(xp, g * _pow_dy(xp, x, y, z), _shape(y)) if needs[1] else None
        return gx, gy

    def jvp(xp, tangents, inputs, out):
        tx, ty = tangents
        x, y = inputs
        a = None if tx is None else tx * _pow_dx(xp, x, y)
        b = None if ty is None else ty * _pow_dy(xp, x, y, out)
        return _bcast(xp, _tsum(xp, a, b), out.shape)

    shape_hint = _binary_shape_hint


# --------------------------------------------------------------------------------------
# Elementwise functions
# --------------------------------------------------------------------------------------
@register(
    formula=r"z = e^{x}",
    vjp_formula=r"\bar x = \bar z \odot z",
    jvp_formula=r"\dot z = \dot x \odot z",
    doc="Exponential; its derivative is its own output, so backward saves the output.",
    flops="elementwise",
    methods=("exp",),
)
class exp:
    def forward(xp, x):
        z = xp.exp(x)
        return z, (z,)

    def vjp(xp, g, saved, needs):
        return (g * saved[0],)

    def jvp(xp, tangents, inputs, out):
        return tangents[0] * out


@register(
    formula=r"z = \log x",
    vjp_formula=r"\bar x = \bar z / x",
    jvp_formula=r"\dot z = \dot x / x",
    doc="Natural logarithm.",
    flops="elementwise",
    methods=("log",),
)
class log:
    def forward(xp, x):
        return xp.log(x), (x,)

    def vjp(xp, g, saved, needs):
        return (g / saved[0],)

    def jvp(xp, tangents, inputs, out):
        return tangents[0] / inputs[0]


@register(
    formula=r"z = \sin x",
    vjp_formula=r"\bar x = \bar z \odot \cos x",
    jvp_formula=r"\dot z = \dot x \odot \cos x",
    doc="Sine.",
    flops="elementwise",
)
class sin:
    def forward(xp, x):
        return xp.sin(x), (x,)

    def vjp(xp, g, saved, needs):
        return (g * xp.cos(saved[0]),)

    def jvp(xp, tangents, inputs, out):
        return tangents[0] * xp.cos(inputs[0])


@register(
    formula=r"z = \cos x",
    vjp_formula=r"\bar x = -\bar z \odot \sin x",
    jvp_formula=r"\dot z = -\dot x \odot \sin x",
    doc="Cosine.",
    flops="elementwise",
)
class cos:
    def forward(xp, x):
        return xp.cos(x), (x,)

    def vjp(xp, g, saved, needs):
        return (-g * xp.sin(saved[0]),)

    def jvp(xp, tangents, inputs, out):
        return -tangents[0] * xp.sin(inputs[0])


@register(
    formula=r"z = \tanh x",
    vjp_formula=r"\bar x = \bar z \odot (1 - z^2)",
    jvp_formula=r"\dot z = \dot x \odot (1 - z^2)",
    doc="Hyperbolic tangent; its local slope is at most 1 (at x = 0).",
    flops="elementwise",
    methods=("tanh",),
)
class tanh:
    def forward(xp, x):
        z = xp.tanh(x)
        return z, (z,)

    def vjp(xp, g, saved, needs):
        z = saved[0]
        return (g * (1 - z * z),)

    def jvp(xp, tangents, inputs, out):
        return tangents[0] * (1 - out * out)


@register(
    formula=r"z = \sigma(x) = 1/(1 + e^{-x})",
    vjp_formula=r"\bar x = \bar z \odot z \odot (1 - z)",
    jvp_formula=r"\dot z = \dot x \odot z \odot (1 - z)",
    doc="Logistic sigmoid; its local slope z(1 - z) is at most 1/4 (the 'squasher').",
    flops="elementwise",
    methods=("sigmoid",),
)
class sigmoid:
    def forward(xp, x):
        # e = e^{-|x|} never overflows. For x >= 0, 1/(1 + e); for x < 0, the same value
        # written e/(1 + e), which keeps full relative accuracy in the left tail (the
        # direct formula loses it: 1 + e^{-x} is then huge, or tanh rounds to -1).
        e = xp.exp(-xp.abs(x))
        d = 1 + e
        z = xp.where(x >= 0, 1 / d, e / d)
        return z, (z,)

    def vjp(xp, g, saved, needs):
        z = saved[0]
        return (g * z * (1 - z),)

    def jvp(xp, tangents, inputs, out):
        return tangents[0] * out * (1 - out)


@register(
    formula=r"z = \max(x, 0)",
    vjp_formula=r"\bar x = \bar z \odot [x > 0]",
    jvp_formula=r"\dot z = \dot x \odot [x > 0]",
    doc="Rectified linear unit: passes the gradient where the input was positive, else 0.",
    flops="elementwise",
    methods=("relu",),
)
class relu:
    def forward(xp, x):
        z = xp.maximum(x, 0)
        return z, (z,)

    def vjp(xp, g, saved, needs):
        return (masked(xp, g, saved[0] > 0),)  # g where z > 0, else 0

    def jvp(xp, tangents, inputs, out):
        return tangents[0] * xp.astype(out > 0, out.dtype)


@register(
    formula=r"z = \max(x, y)",
    vjp_formula=r"\bar x = \bar z \odot [x > y],\quad \bar y = \bar z \odot [y > x]"
    r"\ \ (\text{ties split } \tfrac12, \tfrac12)",
    jvp_formula=r"\dot z = [x > y]\,\dot x + [y > x]\,\dot y",
    doc="Elementwise maximum: the gradient is routed to the larger input (the 'router').",
    flops="elementwise",
)
class maximum:
    def forward(xp, x, y):
        return xp.maximum(x, y), (x, y)

    def vjp(xp, g, saved, needs):
        x, y = saved
        # weights 1 for the larger input, 1/2 each on a tie, 0 for the smaller
        wx = xp.astype(x > y, g.dtype) + 0.5 * xp.astype(x == y, g.dtype)
        gx = g * wx if needs[0] else None
        gy = g * (1 - wx) if needs[1] else None
        return (
            None if gx is None else unbroadcast(xp, gx, _shape(x)),
            None if gy is None else unbroadcast(xp, gy, _shape(y)),
        )

    def jvp(xp, tangents, inputs, out):
        x, y = inputs
        tx, ty = tangents
        tx = xp.zeros_like(out) if tx is None else _bcast(xp, tx, out.shape)
        ty = xp.zeros_like(out) if ty is None else _bcast(xp, ty, out.shape)
        return xp.where(x > y, tx, xp.where(x == y, 0.5 * (tx + ty), ty))

    shape_hint = _binary_shape_hint


def _as_mask(xp: Any, cond: Any, like: Any) -> Any:
    """A boolean condition from what NumPy accepts as one (bools, 0/1 integers, floats,
    nested lists, a Python bool): nonzero is True, as in np.where."""
    if not hasattr(cond, "dtype"):
        cond = xp.asarray(cond, **device_kwargs(like)) if hasattr(like, "shape") else \
            xp.asarray(cond)  # fmt: skip
    if dtype_kind(xp, cond.dtype) != "b":
        cond = cond != 0
    return cond


@register(
    formula=r"z = \mathrm{where}(c, x, y)",
    vjp_formula=r"\bar x = \bar z \odot [c],\quad \bar y = \bar z \odot [\lnot c]",
    jvp_formula=r"\dot z = \mathrm{where}(c, \dot x, \dot y)",
    doc="Select x where the condition holds, else y; the condition gets no gradient.",
    flops="elementwise",
    diff_inputs=(1, 2),
)
class where:
    def forward(xp, cond, x, y):
        cond = _as_mask(xp, cond, x if hasattr(x, "shape") else y)
        return xp.where(cond, x, y), (cond, _shape(x), _shape(y))

    def vjp(xp, g, saved, needs):
        cond, xs, ys = saved
        return (
            None,
            unbroadcast(xp, g * xp.astype(cond, g.dtype), xs) if needs[1] else None,
            unbroadcast(xp, g * xp.astype(~cond, g.dtype), ys) if needs[2] else None,
        )

    def jvp(xp, tangents, inputs, out):
        cond = _as_mask(xp, inputs[0], out)
        tx, ty = tangents[1], tangents[2]
        tx = xp.zeros_like(out) if tx is None else _bcast(xp, tx, out.shape)
        ty = xp.zeros_like(out) if ty is None else _bcast(xp, ty, out.shape)
        return xp.where(cond, tx, ty)

    def call(op, condition, x, y):
        """``x`` where ``condition`` is true (nonzero), else ``y``; no gradient flows to
        the condition."""
        if type(condition) is Tensor:
            condition = condition._data
        return apply(op, condition, x, y)

    def shape_hint(cs: Any, xs: Any, ys: Any, **_: Any) -> str:
        return ("where(condition, x, y) broadcasts the three shapes together, NumPy-style; "
                f"here condition {cs}, x {xs}, y {ys}.")  # fmt: skip


# --------------------------------------------------------------------------------------
# Linear algebra
# --------------------------------------------------------------------------------------
def _mT(xp: Any, a: Any) -> Any:
    return a.T if a.ndim == 2 else xp.matrix_transpose(a)


def _matmul_shape_hint(xs: Any, ys: Any, **_: Any) -> str:
    if isinstance(xs, tuple) and isinstance(ys, tuple) and xs and ys:
        inner_left = xs[-1]
        inner_right = ys[-2] if len(ys) >= 2 else ys[0]
        return (
            f"For x @ y the last axis of x ({inner_left}) must equal the "
            f"{'second-to-last' if len(ys) >= 2 else 'only'} axis of y ({inner_right}). "
            "Did you mean to transpose one operand?"
        )
    return "matmul needs arrays with at least one axis."


@register(
    formula=r"Z = X W",
    vjp_formula=r"\bar X = \bar Z\, W^{\top},\quad \bar W = X^{\top} \bar Z",
    jvp_formula=r"\dot Z = \dot X\, W + X\, \dot W",
    doc="Matrix product (batched and 1-D operands follow the @ operator's rules).",
    flops="matmul",
    operators=("__matmul__", "__rmatmul__"),
)
class matmul:
    def forward(xp, x, y):
        return x @ y, (x, y)

    def vjp(xp, g, saved, needs):
        x, y = saved
        if x.ndim == 2 and y.ndim == 2:  # the common case, kept cheap
            return (g @ y.T if needs[0] else None, x.T @ g if needs[1] else None)
        if x.ndim == 1 and y.ndim == 1:  # dot product
            return (g * y if needs[0] else None, g * x if needs[1] else None)
        x2 = xp.reshape(x, (1, x.shape[0])) if x.ndim == 1 else x
        y2 = xp.reshape(y, (y.shape[0], 1)) if y.ndim == 1 else y
        g2 = g
        if x.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-2)
        if y.ndim == 1:
            g2 = xp.expand_dims(g2, axis=-1)
        gx = gy = None
        if needs[0]:
            gx = xp.reshape(unbroadcast(xp, g2 @ _mT(xp, y2), x2.shape), x.shape)
        if needs[1]:
            gy = xp.reshape(unbroadcast(xp, _mT(xp, x2) @ g2, y2.shape), y.shape)
        return gx, gy

    def jvp(xp, tangents, inputs, out):
        tx, ty = tangents
        x, y = inputs
        return _tsum(xp, None if tx is None else tx @ y, None if ty is None else x @ ty)

    shape_hint = _matmul_shape_hint


# --------------------------------------------------------------------------------------
# Reductions (axes are checked and normalised by _axes: NumPy's rules, our messages)
# --------------------------------------------------------------------------------------
@register(
    formula=r"z = \textstyle\sum_{i \in \text{axes}} x_i",
    vjp_formula=r"\bar x = \mathrm{broadcast}(\bar z)",
    jvp_formula=r"\dot z = \textstyle\sum_{i \in \text{axes}} \dot x_i",
    doc="Sum over axes: every summed element receives the same upstream gradient.",
    flops="reduction",
    methods=("sum",),
)
class sum:  # noqa: A001
    def forward(xp, x, axis=None, keepdims=False):
        axes = _axes("sum", axis, x.ndim)
        return xp.sum(x, axis=axes, keepdims=keepdims), (x.shape, axes, keepdims)

    def vjp(xp, g, saved, needs):
        shape, axes, keepdims = saved
        return (xp.broadcast_to(_expand_reduced(xp, g, axes, keepdims), shape),)

    def jvp(xp, tangents, inputs, out, axis=None, keepdims=False):
        x = inputs[0]
        return xp.sum(_bcast(xp, tangents[0], x.shape), axis=_axes("sum", axis, x.ndim),
                      keepdims=keepdims)  # fmt: skip


@register(
    formula=r"z = \tfrac{1}{n} \textstyle\sum_{i \in \text{axes}} x_i",
    vjp_formula=r"\bar x = \tfrac{1}{n}\, \mathrm{broadcast}(\bar z)",
    jvp_formula=r"\dot z = \tfrac{1}{n} \textstyle\sum_{i \in \text{axes}} \dot x_i",
    doc="Mean over axes: the upstream gradient is shared equally, 1/n each.",
    flops="reduction",
    methods=("mean",),
)
class mean:
    def forward(xp, x, axis=None, keepdims=False):
        axes = _axes("mean", axis, x.ndim)
        return xp.mean(x, axis=axes, keepdims=keepdims), (x.shape, axes, keepdims)

    def vjp(xp, g, saved, needs):
        shape, axes, keepdims = saved
        n = _size([shape[a] for a in axes])
        return (xp.broadcast_to(_expand_reduced(xp, g / n, axes, keepdims), shape),)

    def jvp(xp, tangents, inputs, out, axis=None, keepdims=False):
        x = inputs[0]
        return xp.mean(_bcast(xp, tangents[0], x.shape), axis=_axes("mean", axis, x.ndim),
                       keepdims=keepdims)  # fmt: skip


@register(
    formula=r"z = \max_{i \in \text{axes}} x_i",
    vjp_formula=r"\bar x_i = \bar z\, [x_i = z] / \#\{j : x_j = z\}",
    jvp_formula=r"\dot z = \text{mean of } \dot x_i \text{ over } \{i : x_i = z\}",
    doc="Maximum over axes: the gradient goes to the winning element (shared among ties). "
    "For the elementwise maximum of two tensors use bl.maximum.",
    flops="reduction",
    methods=("max",),
)
class max:  # noqa: A001
    def forward(xp, x, axis=None, keepdims=False):
        axes = _axes("max", axis, x.ndim)
        zk = xp.max(x, axis=axes, keepdims=True)
        z = zk if keepdims else xp.reshape(zk, tuple(s for i, s in enumerate(x.shape)
                                                     if i not in axes))  # fmt: skip
        return z, (x, zk, axes, keepdims)

    def vjp(xp, g, saved, needs):
        x, zk, axes, keepdims = saved
        winners = xp.astype(x == zk, x.dtype)
        count = xp.sum(winners, axis=axes, keepdims=True)
        return (_expand_reduced(xp, g, axes, keepdims) * winners / count,)

    def jvp(xp, tangents, inputs, out, axis=None, keepdims=False):
        x = inputs[0]
        axes = _axes("max", axis, x.ndim)
        zk = xp.max(x, axis=axes, keepdims=True)
        winners = xp.astype(x == zk, x.dtype)
        t = xp.sum(_bcast(xp, tangents[0], x.shape) * winners, axis=axes, keepdims=keepdims)
        return t / xp.sum(winners, axis=axes, keepdims=keepdims)


# --------------------------------------------------------------------------------------
# Shape ops
# --------------------------------------------------------------------------------------
@register(
    formula=r"z = \mathrm{reshape}(x)",
    vjp_formula=r"\bar x = \mathrm{reshape}^{-1}(\bar z)",
    jvp_formula=r"\dot z = \mathrm{reshape}(\dot x)",
    doc="Reshape: the same numbers in a new shape, so the gradient is reshaped back.",
    flops="movement",
    methods=("reshape",),
)
class reshape:
    def forward(xp, x, shape):
        return xp.reshape(x, shape), (x.shape,)

    def vjp(xp, g, saved, needs):
        return (xp.reshape(g, saved[0]),)

    def jvp(xp, tangents, inputs, out, shape):
        return xp.reshape(_bcast(xp, tangents[0], inputs[0].shape), shape)

    def call(op, x, *shape):
        """The same values in a new shape (``-1`` infers one axis): ``bl.reshape(x, 2, 3)``
        or ``bl.reshape(x, (2, 3))``."""
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return apply(op, x, shape=tuple(shape))


def _permutation(axes: Any, ndim: int) -> tuple[int, ...]:
    if axes is None:
        return tuple(reversed(range(ndim)))
    perm = tuple(_axis("transpose", a, ndim) for a in axes)
    if sorted(perm) != list(range(ndim)):
        raise AxisError(
            f"transpose: axes={tuple(axes)} is not a permutation of the {ndim} axes of a "
            f"{ndim}-d tensor; name each of 0..{ndim - 1} (or -{ndim}..-1) exactly once"
        )
    return perm


@register(
    formula=r"z = \mathrm{permute}(x, \pi)",
    vjp_formula=r"\bar x = \mathrm{permute}(\bar z, \pi^{-1})",
    jvp_formula=r"\dot z = \mathrm{permute}(\dot x, \pi)",
    doc="Transpose / permute axes; the gradient is permuted back.",
    flops="movement",
    methods=("transpose",),
)
class transpose:
    def forward(xp, x, axes=None):
        perm = _permutation(axes, x.ndim)
        inverse = tuple(sorted(range(len(perm)), key=perm.__getitem__))
        return xp.permute_dims(x, perm), (inverse,)

    def vjp(xp, g, saved, needs):
        return (xp.permute_dims(g, saved[0]),)

    def jvp(xp, tangents, inputs, out, axes=None):
        x = inputs[0]
        return xp.permute_dims(_bcast(xp, tangents[0], x.shape), _permutation(axes, x.ndim))

    def call(op, x, axes=None):
        """Permute axes (reverse them when ``axes`` is None)."""
        return apply(op, x, axes=None if axes is None else tuple(axes))


def _unwrap_index(index: Any) -> Any:
    if type(index) is Tensor:
        return index._data
    if isinstance(index, tuple):
        return tuple(i._data if type(i) is Tensor else i for i in index)
    return index


@register(
    formula=r"z = x[\text{index}]",
    vjp_formula=r"\bar x = \text{zeros};\ \bar x[\text{index}] \mathrel{+}= \bar z",
    jvp_formula=r"\dot z = \dot x[\text{index}]",
    doc="Indexing and slicing: the gradient is scattered back (repeated indices add up).",
    flops="movement",
    public=False,
    operators=("__getitem__",),
)
class getitem:
    def forward(xp, x, index):
        return x[index], (x.shape, x.dtype, index, device_kwargs(x))

    def vjp(xp, g, saved, needs):
        shape, dtype, index, device = saved
        gx = xp.zeros(shape, dtype=dtype, **device)
        scatter_add(xp, gx, index, g)
        return (gx,)

    def jvp(xp, tangents, inputs, out, index):
        return _bcast(xp, tangents[0], inputs[0].shape)[index]

    def call(op, x, index):
        """``x[index]``: NumPy's basic and integer-array indexing."""
        return apply(op, x, index=_unwrap_index(index))


def _sequence(op: str, tensors: Any) -> tuple[Any, ...]:
    if isinstance(tensors, Tensor) or hasattr(tensors, "shape") or \
            not isinstance(tensors, (list, tuple)):  # fmt: skip
        raise TypeError(
            f"{op} takes a list of tensors, e.g. bl.{op}([a, b], axis=0), not a "
            f"{type(tensors).__name__}"
        )
    if not tensors:
        raise ValueError(f"{op} needs at least one tensor")
    return tuple(tensors)


@register(
    formula=r"z = [x^{(1)}; x^{(2)}; \dots]",
    vjp_formula=r"\bar x^{(k)} = \bar z[\text{block } k]",
    jvp_formula=r"\dot z = [\dot x^{(1)}; \dot x^{(2)}; \dots]",
    doc="Concatenate along an existing axis; the gradient is split back into the pieces.",
    flops="movement",
)
class concatenate:
    def forward(xp, *xs, axis=0):
        axis = _axis("concatenate", axis, len(_shape(xs[0])))
        out = xp.concat(xs, axis=axis)
        return out, (tuple(x.shape[axis] for x in xs), axis)

    def vjp(xp, g, saved, needs):
        sizes, axis = saved
        grads, start = [], 0
        for n, need in zip(sizes, needs):
            if need:
                idx = (slice(None),) * axis + (slice(start, start + n), Ellipsis)
                grads.append(g[idx])
            else:
                grads.append(None)
            start += n
        return tuple(grads)

    def jvp(xp, tangents, inputs, out, axis=0):
        ts = [xp.zeros_like(x) if t is None else _bcast(xp, t, x.shape)
              for t, x in zip(tangents, inputs)]  # fmt: skip
        return xp.concat(ts, axis=axis)

    def call(op, tensors, axis=0):
        """Join tensors along an existing axis."""
        return apply(op, *_sequence("concatenate", tensors), axis=axis)


@register(
    formula=r"z = \mathrm{stack}(x^{(1)}, x^{(2)}, \dots)",
    vjp_formula=r"\bar x^{(k)} = \bar z[k]",
    jvp_formula=r"\dot z = \mathrm{stack}(\dot x^{(1)}, \dot x^{(2)}, \dots)",
    doc="Stack along a new axis; slice k of the gradient goes to input k.",
    flops="movement",
)
class stack:
    def forward(xp, *xs, axis=0):
        axis = _axis("stack", axis, len(_shape(xs[0])) + 1)
        out = xp.stack(xs, axis=axis)
        return out, (axis,)

    def vjp(xp, g, saved, needs):
        axis = saved[0]
        return tuple(
            g[(slice(None),) * axis + (k, Ellipsis)] if need else None
            for k, need in enumerate(needs)
        )

    def jvp(xp, tangents, inputs, out, axis=0):
        ts = [xp.zeros_like(x) if t is None else _bcast(xp, t, x.shape)
              for t, x in zip(tangents, inputs)]  # fmt: skip
        return xp.stack(ts, axis=axis)

    def call(op, tensors, axis=0):
        """Join tensors along a new axis."""
        return apply(op, *_sequence("stack", tensors), axis=axis)


# --------------------------------------------------------------------------------------
# Softmax, log-softmax and the losses
# --------------------------------------------------------------------------------------
def _softmax(xp: Any, x: Any, axis: int) -> Any:
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


@register(
    formula=r"z_i = e^{x_i} / \textstyle\sum_j e^{x_j}",
    vjp_formula=r"\bar x = z \odot (\bar z - \langle \bar z, z \rangle)",
    jvp_formula=r"\dot z = z \odot (\dot x - \langle \dot x, z \rangle)",
    doc="Softmax along an axis (computed stably by subtracting the max).",
    flops="reduction",
)
class softmax:
    def forward(xp, x, axis=-1):
        axis = _axis("softmax", axis, x.ndim)
        z = _softmax(xp, x, axis)
        return z, (z, axis)

    def vjp(xp, g, saved, needs):
        z, axis = saved
        return (z * (g - xp.sum(g * z, axis=axis, keepdims=True)),)

    def jvp(xp, tangents, inputs, out, axis=-1):
        t = _bcast(xp, tangents[0], out.shape)
        return out * (t - xp.sum(t * out, axis=axis, keepdims=True))


@register(
    formula=r"z_i = x_i - \log \textstyle\sum_j e^{x_j}",
    vjp_formula=r"\bar x = \bar z - \mathrm{softmax}(x) \textstyle\sum_j \bar z_j",
    jvp_formula=r"\dot z = \dot x - \langle \dot x, \mathrm{softmax}(x) \rangle",
    doc="Log-softmax along an axis, computed stably (log-sum-exp).",
    flops="reduction",
)
class log_softmax:
    def forward(xp, x, axis=-1):
        axis = _axis("log_softmax", axis, x.ndim)
        shifted = x - xp.max(x, axis=axis, keepdims=True)
        z = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
        return z, (z, axis)

    def vjp(xp, g, saved, needs):
        z, axis = saved
        return (g - xp.exp(z) * xp.sum(g, axis=axis, keepdims=True),)

    def jvp(xp, tangents, inputs, out, axis=-1):
        t = _bcast(xp, tangents[0], out.shape)
        return t - xp.sum(t * xp.exp(out), axis=axis, keepdims=True)


def _targets(xp: Any, labels: Any, logits: Any) -> tuple[Any, Any]:
    """``(Y, Y != 0)``: one-hot rows from integer class labels (N,), or probability rows
    (N, C) as given; labels that do not fit are refused here, naming the first bad one."""
    n, c = logits.shape
    if labels.ndim == 2:
        if tuple(labels.shape) != (n, c):
            raise ShapeError(
                f"cross_entropy: target probabilities have shape {tuple(labels.shape)} but "
                f"the logits have shape {(n, c)}; give one row of {c} probabilities per example"
            )
        y = xp.astype(labels, logits.dtype)
        if not bool(xp.all(y >= 0)):  # also catches NaN
            raise LabelError(
                "cross_entropy: target probabilities must be non-negative and finite; "
                f"found {_first_bad(xp, y, ~(y >= 0))}"
            )
        return y, y != 0
    if tuple(labels.shape) != (n,):
        raise ShapeError(
            f"cross_entropy: labels have shape {tuple(labels.shape)}, but the logits have "
            f"{n} rows; give one integer class label per row, shape ({n},)"
        )
    if dtype_kind(xp, labels.dtype) not in "iuf":
        raise LabelError(
            f"cross_entropy: labels have dtype {labels.dtype}; class labels must be integers "
            f"0..{c - 1}"
        )
    hit = xp.reshape(labels, (n, 1)) == xp.arange(c, **device_kwargs(labels))
    y = xp.astype(hit, logits.dtype)
    if bool(xp.sum(y) != n):  # a label that is no class: negative, too large, or 1.5
        _refuse_labels(xp, labels, c)
    return y, hit


def _refuse_labels(xp: Any, labels: Any, c: int) -> None:
    whole = xp.floor(labels) == labels if dtype_kind(xp, labels.dtype) == "f" else None
    if whole is not None and not bool(xp.all(whole)):
        raise LabelError(
            f"cross_entropy: class labels must be whole numbers 0..{c - 1}, but "
            f"{_first_bad(xp, labels, ~whole)} is not; for soft targets pass "
            f"probabilities of shape ({labels.shape[0]}, {c})"
        )
    bad = (labels < 0) | (labels >= c)
    raise LabelError(
        f"cross_entropy: label {_first_bad(xp, labels, bad)} is out of range for "
        f"{c} classes (labels must be 0..{c - 1})"
    )


def _first_bad(xp: Any, values: Any, bad: Any) -> str:
    """``value (at index i)`` for the first True in ``bad`` (for error messages)."""
    from .backend import to_numpy

    v, b = to_numpy(values), to_numpy(bad)
    flat = int(b.reshape(-1).argmax())
    index: list[int] = []
    rest = flat
    for s in reversed(b.shape):
        index.insert(0, rest % s)
        rest //= s
    where = index[0] if len(index) == 1 else tuple(index)
    return f"{v.reshape(-1)[flat].item()!r} (at index {where})"


def _ce_shape_hint(ls: Any, ys: Any, **_: Any) -> str:
    return (
        "cross_entropy(logits, labels) takes logits of shape (N, C) and either integer class "
        "labels of shape (N,) or target probabilities of shape (N, C)."
    )


@register(
    formula=r"L = -\tfrac{1}{N} \textstyle\sum_n \log \mathrm{softmax}(x_n)_{y_n}",
    vjp_formula=r"\bar x = \bar L\, (p - Y) / N,\quad p = \mathrm{softmax}(x),\ "
    r"Y = \text{one-hot}(y)",
    jvp_formula=r"\dot L = \tfrac{1}{N} \textstyle\sum_n \langle p_n - Y_n, \dot x_n \rangle",
    doc="Softmax cross-entropy, fused and stable; averaged over the batch. Gradient p - y "
    "(for soft targets whose rows do not sum to 1, p * sum(y) - y).",
    flops="reduction",
    diff_inputs=(0,),
)
class cross_entropy:
    def forward(xp, logits, labels):
        if logits.ndim != 2:
            raise ShapeError(
                f"cross_entropy: logits must be 2-D (N examples, C classes), got shape "
                f"{tuple(logits.shape)}; reshape a single example with x.reshape(1, -1)"
            )
        y, nonzero = _targets(xp, labels, logits)
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = xp.sum(e, axis=1, keepdims=True)
        logp = shifted - xp.log(s)
        n = logits.shape[0]
        # where(), not y * logp: a -inf logit of a class with target 0 contributes 0, not nan
        picked = xp.where(nonzero, logp, 0.0)
        loss = -xp.sum(picked if labels.ndim == 1 else y * picked) / n
        ysum = None if labels.ndim == 1 else xp.sum(y, axis=1, keepdims=True)
        return loss, (e / s, y, n, ysum)

    def vjp(xp, g, saved, needs):
        p, y, n, ysum = saved
        if ysum is not None:
            p = p * ysum
        return ((p - y) * (g / n), None)

    def jvp(xp, tangents, inputs, out):
        logits, labels = inputs
        y, _ = _targets(xp, labels, logits)
        p = _softmax(xp, logits, 1)
        if labels.ndim == 2:
            p = p * xp.sum(y, axis=1, keepdims=True)
        return xp.sum((p - y) * tangents[0]) / logits.shape[0]

    def call(op, logits, labels):
        """Mean softmax cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,)
        in 0..C-1, or target probabilities of shape (N, C). The op is fused: its gradient
        with respect to the logits is (softmax(logits) - one_hot(labels)) / N."""
        if type(labels) is Tensor:
            labels = labels._data
        elif not hasattr(labels, "shape"):
            from .backend import default_namespace, namespace_of

            xp = namespace_of(logits._data) if type(logits) is Tensor else \
                default_namespace()[0]  # fmt: skip
            labels = xp.asarray(labels)
        return apply(op, logits, labels)

    shape_hint = _ce_shape_hint


def _mse_shape_hint(ps: Any, ts: Any, **_: Any) -> str:
    return (
        f"mse compares pred {ps} with target {ts} element by element; they must have the "
        "same shape. Broadcasting here is a classic silent bug: (N, 1) against (N,) "
        "would compare every prediction with every target. Reshape one of them."
    )


@register(
    formula=r"L = \tfrac{1}{n} \textstyle\sum_i (\hat y_i - y_i)^2",
    vjp_formula=r"\bar{\hat y} = \tfrac{2}{n} \bar L (\hat y - y),\quad \bar y = -\bar{\hat y}",
    jvp_formula=r"\dot L = \tfrac{2}{n} \langle \hat y - y, \dot{\hat y} - \dot y \rangle",
    doc="Mean squared error over all elements; pred and target must have the same shape.",
    flops="reduction",
)
class mse:
    def forward(xp, pred, target):
        if _shape(pred) != _shape(target):
            raise ShapeError("mse: " + _mse_shape_hint(tuple(_shape(pred)),
                                                       tuple(_shape(target))))  # fmt: skip
        diff = pred - target
        n = _size(diff.shape)
        return xp.sum(diff * diff) / n, (diff, n)

    def vjp(xp, g, saved, needs):
        diff, n = saved
        gp = diff * (2 * g / n)
        return (gp if needs[0] else None, -gp if needs[1] else None)

    def jvp(xp, tangents, inputs, out):
        tp, tt = tangents
        diff = inputs[0] - inputs[1]
        t = _tsum(xp, tp, None if tt is None else -tt)
        return 2 * xp.sum(diff * t) / _size(diff.shape)

    shape_hint = _mse_shape_hint


_BUILTIN.update(REGISTRY)
