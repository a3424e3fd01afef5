"""Derivatives as function transformations, named as in JAX: grad, vjp, jvp, jacobian.

``vjp`` and ``grad`` run the reverse mode (one backward pass per output direction);
``jvp`` runs the forward mode (one forward pass per input direction, tangents pushed through
every op by its JVP rule, no graph recorded); ``jacobian`` builds the full matrix either
way so the two can be compared.

A transform is a pure function of its arguments, as in JAX and ``torch.func``: it records
its own body even inside ``bl.no_grad()``, and it changes no tensor's ``.grad`` (not the
inputs', not the parameters' of a model it calls). It computes first derivatives only; a
transform of a transform raises :class:`~backprop_lab.tensor.HigherOrderError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from typing import Any

from .backend import device_kwargs, is_floating, namespace_of
from .tensor import (
    HigherOrderError,
    Tensor,
    _owned,
    _upstream,
    backpropagate,
    current_mode,
    mode_changed,
    tensor,
)

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "jacobian"]


class _Frame:
    """One running transform body; ``nested`` is set when another transform runs inside."""

    __slots__ = ("name", "nested")

    def __init__(self, name: str) -> None:
        self.name = name
        self.nested = False


@contextmanager
def _body(name: str, forward: bool = False):
    """Run a transform's body: recording on (reverse) or tangents on (forward), this thread."""
    mode = current_mode()
    frame = _Frame(name)
    changes: dict[str, Any] = {"transforms": mode.transforms + (frame,)}
    if forward:
        changes.update(forward_level=mode.forward_level + 1, grad_enabled=False)
    else:
        changes.update(grad_enabled=True)
    with mode_changed(**changes):
        yield frame


_HIGHER_ORDER_FIX = (
    "This engine computes first derivatives only: its VJP and JVP rules work on plain "
    "arrays, so an inner derivative is not itself differentiable. For second derivatives "
    "take finite differences of the gradient, e.g. the Hessian as "
    "backprop_lab.numdiff.numerical_jacobian(lambda x: bl.grad(f)(x), x0)."
)


def _refuse_higher_order(name: str, args: Sequence[Any]) -> None:
    """A transform called on an input that an enclosing transform differentiates."""
    mode = current_mode()
    if not mode.transforms:
        return
    outer = mode.transforms[-1].name
    for a in args:
        if type(a) is not Tensor:
            continue
        if a.requires_grad or getattr(a, "_tangent", None) is not None:
            raise HigherOrderError(
                f"bl.{name} was called inside bl.{outer} on a value bl.{outer} is "
                f"differentiating: that asks for a derivative of a derivative. " + _HIGHER_ORDER_FIX
            )
    for frame in mode.transforms:
        frame.nested = True


def _no_dependence(name: str, frame: _Frame) -> None:
    """The output does not depend on the inputs: fine (zeros), unless the body called a
    transform (the usual way of smuggling a derivative out of the graph)."""
    if frame.nested:
        raise HigherOrderError(
            f"bl.{name}: the output does not depend on the inputs through engine ops, but "
            "the function called another transform (bl.grad, bl.vjp, ...) whose result "
            "was turned back into a constant; its derivative would silently be 0. "
            + _HIGHER_ORDER_FIX
        )


def _as_input(x: Any, requires_grad: bool, what: str = "") -> Tensor:
    """A fresh leaf tensor holding ``x`` (never the caller's own tensor object)."""
    if isinstance(x, Tensor):
        data = x._data
    else:
        data = tensor(x)._data
    xp = namespace_of(data)
    if requires_grad and not is_floating(xp, data.dtype):
        raise TypeError(
            f"cannot differentiate with respect to {what or 'an input'} of dtype "
            f"{data.dtype}: pass floating-point values (e.g. 2.0 rather than 2)."
        )
    return Tensor(data, requires_grad)


def _argnums_tuple(name: str, argnums: Any, nargs: int) -> tuple[int, ...]:
    """``argnums`` as a tuple of non-negative argument indices, checked against the call."""
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    out = []
    for k in nums:
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"{name}: argnums must be an int or a tuple of ints, got {argnums!r}")
        if not -nargs <= k < nargs:
            raise ValueError(
                f"{name}: argnums={argnums!r} asks for the derivative with respect to "
                f"argument {k}, but the function was called with {nargs} argument"
                f"{'' if nargs == 1 else 's'}. Pass that argument too, or choose argnums "
                f"from 0 to {nargs - 1}."
            )
        out.append(k % nargs)
    if len(set(out)) != len(out):
        raise ValueError(f"{name}: argnums={argnums!r} names an argument twice")
    return tuple(out)


def _check_output(out: Any, what: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{what}: the function must return a backprop_lab Tensor computed from its "
            f"inputs, but it returned {type(out).__name__}."
        )
    return out


def _gradients(inputs: list[Tensor], nums: Sequence[int], found: dict) -> list[Any]:
    """Private arrays (never aliasing an input or another gradient); zeros where the
    output does not depend on the input."""
    seen = {id(t._data) for t in inputs}
    grads = []
    for i in nums:
        t = inputs[i]
        g = found.get(t)
        xp = namespace_of(t._data)
        grads.append(xp.zeros_like(t._data) if g is None else _owned(xp, g, seen))
    return grads


def value_and_grad(
    f: Callable[..., Tensor], argnums: int | Sequence[int] = 0
) -> Callable[..., tuple[Any, Any]]:
    """Like :func:`grad`, but the returned function gives ``(f(*args).data, gradient)``."""

    def wrapped(*args: Any) -> tuple[Any, Any]:
        nums = _argnums_tuple("grad", argnums, len(args))
        _refuse_higher_order("grad", args)
        inputs = [_as_input(a, i in nums, f"argument {i}") for i, a in enumerate(args)]
        with _body("grad") as frame:
            out = _check_output(f(*inputs), "grad")
        if tuple(out.shape) != ():
            raise ValueError(
                f"grad needs a function with a scalar output, but it returned shape "
                f"{out.shape}. Use bl.vjp or bl.jacobian for vector outputs."
            )
        found: dict = {}
        if out.requires_grad:
            targets = {inputs[i]: i for i in nums}
            found = backpropagate(out, _upstream(out, None), targets=targets)
        else:
            _no_dependence("grad", frame)
        grads = _gradients(inputs, nums, found)
        return out._data, grads[0] if isinstance(argnums, int) else tuple(grads)

    return wrapped


def grad(f: Callable[..., Tensor], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient of a scalar function: ``bl.grad(f)(x)`` is df/dx, shaped like x.

    ``argnums`` picks which positional arguments to differentiate (a tuple gives a tuple
    of gradients). Arguments may be numbers, lists, arrays or Tensors; gradients are
    backend arrays. No tensor's ``.grad`` is changed.
    """
    vg = value_and_grad(f, argnums)

    def wrapped(*args: Any) -> Any:
        return vg(*args)[1]

    wrapped.__doc__ = f"Gradient of {getattr(f, '__name__', 'f')} (argnums={argnums})."
    return wrapped


def vjp(f: Callable[..., Tensor], *primals: Any) -> tuple[Any, Callable[[Any], tuple]]:
    """Evaluate ``f(*primals)`` and return ``(output, vjp_fn)``.

    ``vjp_fn(u)`` returns the vector-Jacobian products u^T (df/dx_i) for every primal,
    as a tuple of arrays shaped like the primals. It runs one backward pass per call and
    can be called many times (the graph is retained).
    """
    _refuse_higher_order("vjp", primals)
    inputs = [_as_input(p, True, f"primal {i}") for i, p in enumerate(primals)]
    with _body("vjp") as frame:
        out = _check_output(f(*inputs), "vjp")
    if not out.requires_grad:
        _no_dependence("vjp", frame)
    nums = range(len(inputs))
    targets = {t: i for i, t in enumerate(inputs)}

    def vjp_fn(cotangent: Any) -> tuple[Any, ...]:
        g = _upstream(out, cotangent)
        found = backpropagate(out, g, retain_graph=True, targets=targets) \
            if out.requires_grad else {}  # fmt: skip
        return tuple(_gradients(inputs, nums, found))

    return out._data, vjp_fn


def jvp(
    f: Callable[..., Tensor], primals: Sequence[Any], tangents: Sequence[Any]
) -> tuple[Any, Any]:
    """Forward mode: return ``(f(*primals), J v)`` where ``v`` are the input tangents.

    Each op applies its JVP rule to the tangents of its inputs as the forward pass runs;
    no graph is recorded and no backward pass happens.
    """
    for what, seq in (("primals", primals), ("tangents", tangents)):
        if not isinstance(seq, (tuple, list)):
            raise TypeError(
                f"jvp takes its {what} as a tuple, one entry per argument of f: "
                f"bl.jvp(f, (x,), (v,)), not a {type(seq).__name__}"
            )
    if len(primals) != len(tangents):
        raise ValueError(
            f"jvp: got {len(primals)} primals but {len(tangents)} tangents; give one tangent "
            "per primal (zeros for inputs you do not want to perturb)."
        )
    _refuse_higher_order("jvp", primals)
    inputs = [_as_input(p, False) for p in primals]
    for t, v in zip(inputs, tangents):
        xp = namespace_of(t._data)
        v = v._data if isinstance(v, Tensor) else v
        tv = xp.asarray(v, dtype=t._data.dtype, copy=True)  # never hand back the caller's v
        if tuple(tv.shape) != tuple(t._data.shape):
            raise ValueError(
                f"jvp: tangent shape {tuple(tv.shape)} differs from primal shape "
                f"{tuple(t._data.shape)}"
            )
        t._tangent = tv
    with _body("jvp", forward=True) as frame:
        out = _check_output(f(*inputs), "jvp")
    t_out = getattr(out, "_tangent", None)
    if t_out is None:  # the output does not depend on the inputs
        _no_dependence("jvp", frame)
        t_out = namespace_of(out._data).zeros_like(out._data)
    return out._data, t_out


def jacobian(
    f: Callable[..., Tensor], mode: str = "reverse", argnums: int = 0
) -> Callable[..., Any]:
    """The full Jacobian of ``f`` with respect to argument ``argnums``.

    The result has shape ``output.shape + input.shape``. ``mode="reverse"`` builds it one
    row at a time (one VJP per output element); ``mode="forward"`` one column at a time
    (one JVP per input element). Both give the same matrix; their costs differ.
    """
    if mode not in ("reverse", "forward"):
        raise ValueError(f"jacobian mode must be 'reverse' or 'forward', not {mode!r}")
    if isinstance(argnums, bool) or not isinstance(argnums, int):
        raise TypeError(f"jacobian: argnums must be one int (one input), got {argnums!r}")

    def wrapped(*args: Any) -> Any:
        (k,) = _argnums_tuple("jacobian", argnums, len(args))
        x = _as_input(args[k], True, f"argument {k}")._data
        xp = namespace_of(x)
        n_in = _size(x.shape)

        def f_of_x(xt: Tensor) -> Tensor:
            call = list(args)
            call[k] = xt
            return f(*call)

        if mode == "reverse":
            out, pullback = vjp(f_of_x, x)
            n_out = _size(out.shape)
            rows = []
            for j in range(n_out):
                e = xp.reshape(_basis(xp, n_out, j, out.dtype, out), out.shape)
                rows.append(xp.reshape(pullback(e)[0], (n_in,)))
            jac = xp.stack(rows, axis=0) if rows else xp.zeros((0, n_in), dtype=x.dtype)
            return xp.reshape(jac, tuple(out.shape) + tuple(x.shape))
        cols = []
        out = None
        for j in range(n_in):
            e = xp.reshape(_basis(xp, n_in, j, x.dtype, x), x.shape)
            out, col = jvp(f_of_x, (x,), (e,))
            cols.append(xp.reshape(col, (_size(out.shape),)))
        if out is None:
            with mode_changed(grad_enabled=False):
                out = f_of_x(Tensor(x))._data
        n_out = _size(out.shape)
        jac = xp.stack(cols, axis=1) if cols else xp.zeros((n_out, 0), dtype=x.dtype)
        return xp.reshape(jac, tuple(out.shape) + tuple(x.shape))

    return wrapped


def _size(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _basis(xp: Any, n: int, k: int, dtype: Any, like: Any) -> Any:
    e = xp.zeros((n,), dtype=dtype, **device_kwargs(like))
    e[k] = 1
    return e
