r"""Every differentiable op, defined once: forward, VJP, JVP and the formulas the book shows.

Each op is a small class used as a namespace (no instances)::

    @register(formula=..., vjp_formula=..., jvp_formula=..., doc=...)
    class mul:
        def forward(xp, x, y):                 # -> (output, saved for backward)
        def vjp(xp, g, saved, needs):          # upstream g -> one gradient per input
        def jvp(xp, tangents, inputs, out):    # input tangents -> output tangent

``xp`` is the array namespace of the inputs (NumPy, CuPy or array-API); rules never
import NumPy. ``needs[i]`` says whether input ``i`` wants a gradient, so a rule skips work
nobody asked for (``None`` in that slot). ``saved`` is exactly what the backward reads:
that is what the graph keeps alive until backward runs.

In the formulas, :math:`\bar z` is the upstream gradient :math:`\partial L/\partial z`
(a row vector: backprop multiplies it by Jacobians from the right), :math:`\dot x` a tangent
pushed forward, and :math:`\odot` the elementwise product.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backend import device_kwargs, scatter_add

__all__ = ["Op", "REGISTRY", "register", "unbroadcast"]


class Op:
    """One registry entry. ``diff_inputs``: indices of inputs that can carry gradients."""

    __slots__ = (
        "name",
        "forward",
        "vjp",
        "jvp",
        "formula",
        "vjp_formula",
        "jvp_formula",
        "doc",
        "diff_inputs",
        "shape_hint",
    )

    def __init__(self, name, forward, vjp, jvp, formula, vjp_formula, jvp_formula, doc,
                 diff_inputs, shape_hint) -> None:  # fmt: skip
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

    def __repr__(self) -> str:
        return f"<Op {self.name}>"


REGISTRY: dict[str, Op] = {}


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
    diff_inputs: tuple[int, ...] | None = None,
) -> Callable[[type], Op]:
    """Class decorator: turn a namespace class with forward/vjp/jvp into a registered Op."""

    def wrap(cls: type) -> Op:
        name = cls.__name__
        missing = [f for f in ("forward", "vjp", "jvp") if not callable(getattr(cls, f, None))]
        if missing:
            raise TypeError(f"op {name} lacks {', '.join(missing)}")
        op = Op(
            name,
            cls.forward,
            cls.vjp,
            cls.jvp,
            formula,
            vjp_formula,
            jvp_formula,
            doc,
            _ALL if diff_inputs is None else frozenset(diff_inputs),
            getattr(cls, "shape_hint", None),
        )
        REGISTRY[name] = op
        return op

    return wrap


# --------------------------------------------------------------------------------------
# Shared helpers: broadcasting is handled here once, not in every rule.
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
    axes = tuple(range(lead)) + tuple(
        lead + i for i, s in enumerate(shape) if s == 1 and gshape[lead + i] != 1
    )
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


def _norm_axes(axis: Any, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim if ndim else 0 for a in axis))


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


# --------------------------------------------------------------------------------------
# Elementwise arithmetic
# --------------------------------------------------------------------------------------
@register(
    formula=r"z = x + y",
    vjp_formula=r"\bar x = \bar z,\quad \bar y = \bar z",
    jvp_formula=r"\dot z = \dot x + \dot y",
    doc="Addition: the gradient is copied unchanged to both inputs (the 'distributor').",
)
class add:
    def forward(xp, x, y):
        return x + y, (_shape(x), _shape(y))

    def vjp(xp, g, saved, needs):
        xs, ys = saved
        return (
            unbroadcast(xp, g, xs) if needs[0] else None,
            unbroadcast(xp, g, ys) if needs[1] else None,
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
)
class sub:
    def forward(xp, x, y):
        return x - y, (_shape(x), _shape(y))

    def vjp(xp, g, saved, needs):
        xs, ys = saved
        return (
            unbroadcast(xp, g, xs) if needs[0] else None,
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
)
class neg:
    def forward(xp, x):
        return -x, ()

    def vjp(xp, g, saved, needs):
        return (-g,)

    def jvp(xp, tangents, inputs, out):
        return -tangents[0]


@register(
    formula=r"z = x^{y}",
    vjp_formula=r"\bar x = \bar z \odot y\, x^{y-1},\quad \bar y = \bar z \odot z \log x",
    jvp_formula=r"\dot z = \dot x \odot y\, x^{y-1} + \dot y \odot z \log x",
    doc="Power; the exponent may be a constant or a tensor (then x must be positive).",
)
class pow:  # noqa: A001 - the op's name is the operator's name
    def forward(xp, x, y):
        z = x**y
        return z, (x, y, z)

    def vjp(xp, g, saved, needs):
        x, y, z = saved
        gx = unbroadcast(xp, g * y * x ** (y - 1), x.shape) if needs[0] else None
        gy = unbroadcast(xp, g * z * xp.log(x), y.shape) if needs[1] else None
        return gx, gy

    def jvp(xp, tangents, inputs, out):
        tx, ty = tangents
        x, y = inputs
        a = None if tx is None else tx * y * x ** (y - 1)
        b = None if ty is None else ty * out * xp.log(x)
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
)
class sigmoid:
    def forward(xp, x):
        z = 0.5 * xp.tanh(0.5 * x) + 0.5  # = 1/(1+e^-x), without overflow for large |x|
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
)
class relu:
    def forward(xp, x):
        z = xp.maximum(x, 0)
        return z, (z,)

    def vjp(xp, g, saved, needs):
        # A 0/1 mask times g: as exact as where(z > 0, g, 0) and, on random signs, several
        # times faster in NumPy (where() branches per element).
        return (g * xp.astype(saved[0] > 0, g.dtype),)

    def jvp(xp, tangents, inputs, out):
        return tangents[0] * xp.astype(out > 0, out.dtype)


@register(
    formula=r"z = \max(x, y)",
    vjp_formula=r"\bar x = \bar z \odot [x > y],\quad \bar y = \bar z \odot [y > x]"
    r"\ \ (\text{ties split } \tfrac12, \tfrac12)",
    jvp_formula=r"\dot z = [x > y]\,\dot x + [y > x]\,\dot y",
    doc="Elementwise maximum: the gradient is routed to the larger input (the 'router').",
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
            None if gx is None else unbroadcast(xp, gx, x.shape),
            None if gy is None else unbroadcast(xp, gy, y.shape),
        )

    def jvp(xp, tangents, inputs, out):
        x, y = inputs
        tx, ty = tangents
        tx = xp.zeros_like(out) if tx is None else _bcast(xp, tx, out.shape)
        ty = xp.zeros_like(out) if ty is None else _bcast(xp, ty, out.shape)
        return xp.where(x > y, tx, xp.where(x == y, 0.5 * (tx + ty), ty))

    shape_hint = _binary_shape_hint


@register(
    formula=r"z = \mathrm{where}(c, x, y)",
    vjp_formula=r"\bar x = \bar z \odot [c],\quad \bar y = \bar z \odot [\lnot c]",
    jvp_formula=r"\dot z = \mathrm{where}(c, \dot x, \dot y)",
    doc="Select x where the boolean condition holds, else y; the condition gets no gradient.",
    diff_inputs=(1, 2),
)
class where:
    def forward(xp, cond, x, y):
        return xp.where(cond, x, y), (cond, _shape(x), _shape(y))

    def vjp(xp, g, saved, needs):
        cond, xs, ys = saved
        return (
            None,
            unbroadcast(xp, g * xp.astype(cond, g.dtype), xs) if needs[1] else None,
            unbroadcast(xp, g * xp.astype(~cond, g.dtype), ys) if needs[2] else None,
        )

    def jvp(xp, tangents, inputs, out):
        cond = inputs[0]
        tx, ty = tangents[1], tangents[2]
        tx = xp.zeros_like(out) if tx is None else _bcast(xp, tx, out.shape)
        ty = xp.zeros_like(out) if ty is None else _bcast(xp, ty, out.shape)
        return xp.where(cond, tx, ty)


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
# Reductions
# --------------------------------------------------------------------------------------
@register(
    formula=r"z = \textstyle\sum_{i \in \text{axes}} x_i",
    vjp_formula=r"\bar x = \mathrm{broadcast}(\bar z)",
    jvp_formula=r"\dot z = \textstyle\sum_{i \in \text{axes}} \dot x_i",
    doc="Sum over axes: every summed element receives the same upstream gradient.",
)
class sum:  # noqa: A001
    def forward(xp, x, axis=None, keepdims=False):
        axes = _norm_axes(axis, x.ndim)
        return xp.sum(x, axis=axes, keepdims=keepdims), (x.shape, axes, keepdims)

    def vjp(xp, g, saved, needs):
        shape, axes, keepdims = saved
        return (xp.broadcast_to(_expand_reduced(xp, g, axes, keepdims), shape),)

    def jvp(xp, tangents, inputs, out, axis=None, keepdims=False):
        x = inputs[0]
        return xp.sum(_bcast(xp, tangents[0], x.shape), axis=_norm_axes(axis, x.ndim),
                      keepdims=keepdims)  # fmt: skip


def _count(shape: tuple[int, ...], axes: tuple[int, ...]) -> int:
    n = 1
    for a in axes:
        n *= shape[a]
    return n


@register(
    formula=r"z = \tfrac{1}{n} \textstyle\sum_{i \in \text{axes}} x_i",
    vjp_formula=r"\bar x = \tfrac{1}{n}\, \mathrm{broadcast}(\bar z)",
    jvp_formula=r"\dot z = \tfrac{1}{n} \textstyle\sum_{i \in \text{axes}} \dot x_i",
    doc="Mean over axes: the upstream gradient is shared equally, 1/n each.",
)
class mean:
    def forward(xp, x, axis=None, keepdims=False):
        axes = _norm_axes(axis, x.ndim)
        return xp.mean(x, axis=axes, keepdims=keepdims), (x.shape, axes, keepdims)

    def vjp(xp, g, saved, needs):
        shape, axes, keepdims = saved
        n = _count(shape, axes)
        return (xp.broadcast_to(_expand_reduced(xp, g / n, axes, keepdims), shape),)

    def jvp(xp, tangents, inputs, out, axis=None, keepdims=False):
        x = inputs[0]
        return xp.mean(_bcast(xp, tangents[0], x.shape), axis=_norm_axes(axis, x.ndim),
                       keepdims=keepdims)  # fmt: skip


@register(
    formula=r"z = \max_{i \in \text{axes}} x_i",
    vjp_formula=r"\bar x_i = \bar z\, [x_i = z] / \#\{j : x_j = z\}",
    jvp_formula=r"\dot z = \text{mean of } \dot x_i \text{ over } \{i : x_i = z\}",
    doc="Maximum over axes: the gradient goes to the winning element (shared among ties).",
)
class max:  # noqa: A001
    def forward(xp, x, axis=None, keepdims=False):
        axes = _norm_axes(axis, x.ndim)
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
        axes = _norm_axes(axis, x.ndim)
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
)
class reshape:
    def forward(xp, x, shape):
        return xp.reshape(x, shape), (x.shape,)

    def vjp(xp, g, saved, needs):
        return (xp.reshape(g, saved[0]),)

    def jvp(xp, tangents, inputs, out, shape):
        return xp.reshape(_bcast(xp, tangents[0], inputs[0].shape), shape)


@register(
    formula=r"z = \mathrm{permute}(x, \pi)",
    vjp_formula=r"\bar x = \mathrm{permute}(\bar z, \pi^{-1})",
    jvp_formula=r"\dot z = \mathrm{permute}(\dot x, \pi)",
    doc="Transpose / permute axes; the gradient is permuted back.",
)
class transpose:
    def forward(xp, x, axes=None):
        axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(axes)
        inverse = tuple(sorted(range(len(axes)), key=axes.__getitem__))
        return xp.permute_dims(x, axes), (inverse,)

    def vjp(xp, g, saved, needs):
        return (xp.permute_dims(g, saved[0]),)

    def jvp(xp, tangents, inputs, out, axes=None):
        x = inputs[0]
        axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(axes)
        return xp.permute_dims(_bcast(xp, tangents[0], x.shape), axes)


@register(
    formula=r"z = x[\text{index}]",
    vjp_formula=r"\bar x = \text{zeros};\ \bar x[\text{index}] \mathrel{+}= \bar z",
    jvp_formula=r"\dot z = \dot x[\text{index}]",
    doc="Indexing and slicing: the gradient is scattered back (repeated indices add up).",
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


@register(
    formula=r"z = [x^{(1)}; x^{(2)}; \dots]",
    vjp_formula=r"\bar x^{(k)} = \bar z[\text{block } k]",
    jvp_formula=r"\dot z = [\dot x^{(1)}; \dot x^{(2)}; \dots]",
    doc="Concatenate along an existing axis; the gradient is split back into the pieces.",
)
class concatenate:
    def forward(xp, *xs, axis=0):
        out = xp.concat(xs, axis=axis)
        axis = axis % out.ndim
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


@register(
    formula=r"z = \mathrm{stack}(x^{(1)}, x^{(2)}, \dots)",
    vjp_formula=r"\bar x^{(k)} = \bar z[k]",
    jvp_formula=r"\dot z = \mathrm{stack}(\dot x^{(1)}, \dot x^{(2)}, \dots)",
    doc="Stack along a new axis; slice k of the gradient goes to input k.",
)
class stack:
    def forward(xp, *xs, axis=0):
        out = xp.stack(xs, axis=axis)
        return out, (axis % out.ndim,)

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
)
class softmax:
    def forward(xp, x, axis=-1):
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
)
class log_softmax:
    def forward(xp, x, axis=-1):
        shifted = x - xp.max(x, axis=axis, keepdims=True)
        z = shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))
        return z, (z, axis)

    def vjp(xp, g, saved, needs):
        z, axis = saved
        return (g - xp.exp(z) * xp.sum(g, axis=axis, keepdims=True),)

    def jvp(xp, tangents, inputs, out, axis=-1):
        t = _bcast(xp, tangents[0], out.shape)
        return t - xp.sum(t * xp.exp(out), axis=axis, keepdims=True)


def _targets(xp: Any, labels: Any, logits: Any) -> Any:
    """One-hot rows from integer class labels (N,), or probability rows (N, C) as given."""
    n, c = logits.shape
    if labels.ndim == 2:
        if tuple(labels.shape) != (n, c):
            raise ValueError(f"target probabilities must have shape {(n, c)}")
        return xp.astype(labels, logits.dtype)
    if tuple(labels.shape) != (n,):
        raise ValueError(f"labels must have shape ({n},) to match {n} rows of logits")
    classes = xp.arange(c, **device_kwargs(labels))
    return xp.astype(xp.reshape(labels, (n, 1)) == classes, logits.dtype)


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
    doc="Softmax cross-entropy, fused and stable; averaged over the batch. Gradient p - y.",
    diff_inputs=(0,),
)
class cross_entropy:
    def forward(xp, logits, labels):
        if logits.ndim != 2:
            raise ValueError("logits must be 2-D (N, C)")
        y = _targets(xp, labels, logits)
        shifted = logits - xp.max(logits, axis=1, keepdims=True)
        e = xp.exp(shifted)
        s = xp.sum(e, axis=1, keepdims=True)
        logp = shifted - xp.log(s)
        n = logits.shape[0]
        loss = -xp.sum(y * logp) / n
        return loss, (e / s, y, n)

    def vjp(xp, g, saved, needs):
        p, y, n = saved
        return ((p - y) * (g / n), None)

    def jvp(xp, tangents, inputs, out):
        logits, labels = inputs
        y = _targets(xp, labels, logits)
        p = _softmax(xp, logits, 1)
        return xp.sum((p - y) * tangents[0]) / logits.shape[0]

    shape_hint = _ce_shape_hint


@register(
    formula=r"L = \tfrac{1}{n} \textstyle\sum_i (\hat y_i - y_i)^2",
    vjp_formula=r"\bar{\hat y} = \tfrac{2}{n} \bar L (\hat y - y),\quad \bar y = -\bar{\hat y}",
    jvp_formula=r"\dot L = \tfrac{2}{n} \langle \hat y - y, \dot{\hat y} - \dot y \rangle",
    doc="Mean squared error over all elements; pred and target must have the same shape.",
)
class mse:
    def forward(xp, pred, target):
        if _shape(pred) != _shape(target):
            raise ValueError("pred and target must have the same shape (no broadcasting)")
        diff = pred - target
        n = 1
        for s in diff.shape:
            n *= s
        return xp.sum(diff * diff) / n, (diff, n)

    def vjp(xp, g, saved, needs):
        diff, n = saved
        gp = diff * (2 * g / n)
        return (gp if needs[0] else None, -gp if needs[1] else None)

    def jvp(xp, tangents, inputs, out):
        tp, tt = tangents
        diff = inputs[0] - inputs[1]
        t = _tsum(xp, tp, None if tt is None else -tt)
        n = 1
        for s in diff.shape:
            n *= s
        return 2 * xp.sum(diff * t) / n

    def shape_hint(ps: Any, ts: Any, **_: Any) -> str:
        return (
            f"mse compares pred {ps} with target {ts} element by element; they must have the "
            "same shape. Broadcasting here is a classic silent bug: (N, 1) against (N,) "
            "would compare every prediction with every target. Reshape one of them."
        )
