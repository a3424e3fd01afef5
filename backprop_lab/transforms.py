"""Derivatives as function transformations, named as in JAX: grad, vjp, jvp, jacobian.

``vjp`` and ``grad`` run the reverse mode (one backward pass per output direction);
``jvp`` runs the forward mode (one forward pass per input direction, tangents pushed through
every op by its JVP rule, no graph recorded); ``jacobian`` builds the full matrix either
way so the two can be compared.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .backend import device_kwargs, is_floating, namespace_of
from .tensor import MODE, Tensor, backward, no_grad, tensor

__all__ = ["grad", "value_and_grad", "vjp", "jvp", "jacobian"]


def _as_input(x: Any, requires_grad: bool) -> Tensor:
    """A fresh leaf tensor holding ``x`` (never the caller's own tensor object)."""
    data = x.data if isinstance(x, Tensor) else None
    if data is None:
        t = tensor(x)
        data = t.data
    xp = namespace_of(data)
    if requires_grad and not is_floating(xp, data.dtype):
        raise TypeError(
            f"cannot differentiate with respect to an input of dtype {data.dtype}: "
            "pass floating-point values (e.g. 2.0 rather than 2)."
        )
    return Tensor(data, requires_grad)


def _argnums_tuple(argnums: int | Sequence[int]) -> tuple[int, ...]:
    return (argnums,) if isinstance(argnums, int) else tuple(argnums)


def _check_output(out: Any, what: str) -> Tensor:
    if not isinstance(out, Tensor):
        raise TypeError(
            f"{what}: the function must return a backprop_lab Tensor computed from its "
            f"inputs, but it returned {type(out).__name__}."
        )
    return out


def value_and_grad(
    f: Callable[..., Tensor], argnums: int | Sequence[int] = 0
) -> Callable[..., tuple[Any, Any]]:
    """Like :func:`grad`, but the returned function gives ``(f(*args).data, gradient)``."""
    nums = _argnums_tuple(argnums)

    def wrapped(*args: Any) -> tuple[Any, Any]:
        inputs = [_as_input(a, i in nums) for i, a in enumerate(args)]
        out = _check_output(f(*inputs), "grad")
        if tuple(out.shape) != ():
            raise ValueError(
                f"grad needs a function with a scalar output, but it returned shape "
                f"{out.shape}. Use bl.vjp or bl.jacobian for vector outputs."
            )
        if out.requires_grad:
            backward(out)
        grads = []
        for i in nums:
            g = inputs[i].grad
            if g is None:  # the output does not depend on this input
                xp = namespace_of(inputs[i].data)
                g = xp.zeros_like(inputs[i].data)
            grads.append(g)
        return out.data, grads[0] if isinstance(argnums, int) else tuple(grads)

    return wrapped


def grad(f: Callable[..., Tensor], argnums: int | Sequence[int] = 0) -> Callable[..., Any]:
    """The gradient of a scalar function: ``bl.grad(f)(x)`` is df/dx, shaped like x.

    ``argnums`` picks which positional arguments to differentiate (a tuple gives a tuple
    of gradients). Arguments may be numbers, lists, arrays or Tensors; gradients are
    backend arrays.
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
    inputs = [_as_input(p, True) for p in primals]
    out = _check_output(f(*inputs), "vjp")

    def vjp_fn(cotangent: Any) -> tuple[Any, ...]:
        for t in inputs:
            t.grad = None
        if out.requires_grad:
            backward(out, cotangent, retain_graph=True)
        result = []
        for t in inputs:
            g = t.grad
            if g is None:
                g = namespace_of(t.data).zeros_like(t.data)
            result.append(g)
            t.grad = None
        return tuple(result)

    return out.data, vjp_fn


def jvp(
    f: Callable[..., Tensor], primals: Sequence[Any], tangents: Sequence[Any]
) -> tuple[Any, Any]:
    """Forward mode: return ``(f(*primals), J v)`` where ``v`` are the input tangents.

    Each op applies its JVP rule to the tangents of its inputs as the forward pass runs;
    no graph is recorded and no backward pass happens.
    """
    if len(primals) != len(tangents):
        raise ValueError(
            f"jvp: got {len(primals)} primals but {len(tangents)} tangents; give one tangent "
            "per primal (zeros for inputs you do not want to perturb)."
        )
    if MODE.forward_level:
        raise RuntimeError("nested bl.jvp is not supported (forward mode is one level deep)")
    inputs = [_as_input(p, False) for p in primals]
    for t, v in zip(inputs, tangents):
        xp = namespace_of(t.data)
        v = v.data if isinstance(v, Tensor) else v
        tv = xp.asarray(v, dtype=t.data.dtype)
        if tuple(tv.shape) != tuple(t.data.shape):
            raise ValueError(
                f"jvp: tangent shape {tuple(tv.shape)} differs from primal shape "
                f"{tuple(t.data.shape)}"
            )
        t._tangent = tv
    MODE.forward_level += 1
    try:
        with no_grad():
            out = _check_output(f(*inputs), "jvp")
    finally:
        MODE.forward_level -= 1
    t_out = getattr(out, "_tangent", None)
    if t_out is None:  # the output does not depend on the inputs
        t_out = namespace_of(out.data).zeros_like(out.data)
    return out.data, t_out


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

    def wrapped(*args: Any) -> Any:
        x = _as_input(args[argnums], True).data
        xp = namespace_of(x)
        n_in = _size(x.shape)

        def f_of_x(xt: Tensor) -> Tensor:
            call = list(args)
            call[argnums] = xt
            return f(*call)

        if mode == "reverse":
            out, pullback = vjp(f_of_x, x)
            n_out = _size(out.shape)
            rows = []
            for k in range(n_out):
                e = xp.reshape(_basis(xp, n_out, k, out.dtype, out), out.shape)
                rows.append(xp.reshape(pullback(e)[0], (n_in,)))
            jac = xp.stack(rows, axis=0) if rows else xp.zeros((0, n_in), dtype=x.dtype)
            return xp.reshape(jac, tuple(out.shape) + tuple(x.shape))
        cols = []
        out = None
        for k in range(n_in):
            e = xp.reshape(_basis(xp, n_in, k, x.dtype, x), x.shape)
            out, col = jvp(f_of_x, (x,), (e,))
            cols.append(xp.reshape(col, (_size(out.shape),)))
        if out is None:
            out = f_of_x(Tensor(x)).data
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
