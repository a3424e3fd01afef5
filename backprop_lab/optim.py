"""Optimisers: they read ``p.grad`` and update ``p.data`` in place, outside the graph."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .backend import namespace_of
from .tensor import Tensor

__all__ = ["Optimizer", "SGD", "Adam"]


class Optimizer:
    """Base class: keeps the parameter list; ``zero_grad()`` resets their gradients."""

    def __init__(self, params: Iterable[Tensor], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("the optimizer got no parameters (did you pass model.parameters()?)")
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor) or not p.requires_grad:
                raise TypeError(
                    f"parameter {i} is not a tensor with requires_grad=True; optimizers "
                    "update trainable tensors only"
                )
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def parameters(self) -> list[Tensor]:
        return self.params

    def step(self) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (heavy ball) and weight decay.

    ``v <- momentum * v + grad``; ``p <- p - lr * v`` (with momentum 0 this is
    ``p <- p - lr * grad``). Parameters without a gradient are skipped.
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 0.1,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.weight_decay = weight_decay
        self._velocity: list[Any] = [None] * len(self.params)

    def step(self) -> None:
        lr, mom, wd = self.lr, self.momentum, self.weight_decay
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            if wd:
                g = g + wd * p.data
            if mom:
                v = self._velocity[i]
                if v is None:
                    v = self._velocity[i] = namespace_of(g).asarray(g, copy=True)
                else:
                    v *= mom
                    v += g
                g = v
            p.data -= lr * g


class Adam(Optimizer):
    """Adam (Kingma and Ba, 2015) with bias-corrected first and second moments."""

    def __init__(
        self,
        params: Iterable[Tensor],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, lr)
        self.b1, self.b2 = betas
        if not (0.0 <= self.b1 < 1.0 and 0.0 <= self.b2 < 1.0):
            raise ValueError(f"betas must be in [0, 1), got {betas}")
        self.eps = eps
        self.t = 0
        self._m: list[Any] = [None] * len(self.params)
        self._v: list[Any] = [None] * len(self.params)

    def step(self) -> None:
        self.t += 1
        c1 = 1.0 - self.b1**self.t
        c2 = 1.0 - self.b2**self.t
        for i, p in enumerate(self.params):
            g = p.grad
            if g is None:
                continue
            xp = namespace_of(g)
            if self._m[i] is None:
                self._m[i] = xp.zeros_like(g)
                self._v[i] = xp.zeros_like(g)
            m, v = self._m[i], self._v[i]
            m *= self.b1
            m += (1.0 - self.b1) * g
            v *= self.b2
            v += (1.0 - self.b2) * (g * g)
            p.data -= (self.lr / c1) * m / (xp.sqrt(v / c2) + self.eps)
