"""Layers built from the engine's ops: Module, Linear, activations, Sequential, MLP.

Weights are stored as (in_features, out_features) so a batch of row vectors goes through
``x @ W + b``, matching the book's notation. Initialisers return NumPy arrays (drawn from
a seeded generator) that the layer copies onto the active backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from . import functional as F
from .tensor import Tensor, tensor

__all__ = [
    "Module",
    "Linear",
    "ReLU",
    "Tanh",
    "Sigmoid",
    "Sequential",
    "MLP",
    "xavier_uniform",
    "he_normal",
    "scaled_normal",
    "INITIALISERS",
]


# --------------------------------------------------------------------------------------
# Initialisers
# --------------------------------------------------------------------------------------
def xavier_uniform(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """Glorot and Bengio (2010): U(-a, a) with a = sqrt(6 / (fan_in + fan_out)).

    Keeps the variance of activations and of gradients roughly constant across layers
    for symmetric activations such as tanh.
    """
    a = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=(fan_in, fan_out))


def he_normal(fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """He et al. (2015): N(0, 2 / fan_in), which compensates for ReLU zeroing half its inputs."""
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=(fan_in, fan_out))


def scaled_normal(
    fan_in: int, fan_out: int, rng: np.random.Generator, std: float = 0.01
) -> np.ndarray:
    """N(0, std^2) with a fixed ``std``: the naive choice, handy for showing what goes wrong."""
    return rng.normal(0.0, std, size=(fan_in, fan_out))


INITIALISERS: dict[str, Callable[..., np.ndarray]] = {
    "xavier_uniform": xavier_uniform,
    "he_normal": he_normal,
    "scaled_normal": scaled_normal,
}


def _resolve_init(init: str | Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    if callable(init):
        return init
    try:
        return INITIALISERS[init]
    except KeyError:
        raise ValueError(
            f"unknown initialiser {init!r}; choose one of {sorted(INITIALISERS)} or pass a "
            "function (fan_in, fan_out, rng) -> array"
        ) from None


# --------------------------------------------------------------------------------------
# Modules
# --------------------------------------------------------------------------------------
class Module:
    """Base class: holds parameters and sub-modules; ``module(x)`` calls ``forward(x)``.

    Hooks: ``register_forward_hook(fn)`` calls ``fn(module, inputs, output)`` after each
    forward; ``register_full_backward_hook(fn)`` calls ``fn(module, grad_output)`` when the
    gradient with respect to the module's output has been computed in backward.
    """

    def __init__(self) -> None:
        self._forward_hooks: list[Callable] = []
        self._backward_hooks: list[Callable] = []

    def forward(self, *args: Any) -> Tensor:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any) -> Tensor:
        out = self.forward(*args)
        for hook in getattr(self, "_forward_hooks", ()):
            hook(self, args, out)
        backward_hooks = getattr(self, "_backward_hooks", ())
        if backward_hooks and isinstance(out, Tensor) and out.requires_grad:
            for hook in backward_hooks:
                out.register_hook(lambda g, hook=hook: hook(self, g))
        return out

    def register_forward_hook(self, fn: Callable) -> Callable[[], None]:
        """Call ``fn(module, inputs, output)`` after every forward; returns a remover."""
        self._forward_hooks.append(fn)
        return lambda: self._forward_hooks.remove(fn) if fn in self._forward_hooks else None

    def register_full_backward_hook(self, fn: Callable) -> Callable[[], None]:
        """Call ``fn(module, grad_output)`` during backward; returns a remover."""
        self._backward_hooks.append(fn)
        return lambda: self._backward_hooks.remove(fn) if fn in self._backward_hooks else None

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(name, tensor) for every parameter, depth first, in definition order."""
        for name, value in vars(self).items():
            if isinstance(value, Tensor) and value.requires_grad:
                yield prefix + name, value
            elif isinstance(value, Module):
                yield from value.named_parameters(prefix + name + ".")
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Module):
                        yield from item.named_parameters(f"{prefix}{name}.{i}.")

    def parameters(self) -> list[Tensor]:
        """Every trainable tensor in this module and its sub-modules."""
        return [p for _, p in self.named_parameters()]

    def modules(self) -> Iterator[Module]:
        """This module and every sub-module, depth first."""
        yield self
        for value in vars(self).values():
            if isinstance(value, Module):
                yield from value.modules()
            elif isinstance(value, (list, tuple)):
                for item in value:
                    if isinstance(item, Module):
                        yield from item.modules()

    def zero_grad(self) -> None:
        """Set every parameter's gradient to None."""
        for p in self.parameters():
            p.grad = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Linear(Module):
    """An affine layer ``y = x @ W + b`` with W of shape (in_features, out_features)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        init: str | Callable[..., np.ndarray] = "xavier_uniform",
        seed: int | np.random.Generator | None = 0,
        dtype: str = "float64",
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1:
            raise ValueError(f"Linear needs positive sizes, got {in_features} -> {out_features}")
        rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.in_features, self.out_features = in_features, out_features
        w = _resolve_init(init)(in_features, out_features, rng)
        self.W = tensor(w, requires_grad=True, dtype=dtype)
        self.W.name = "W"
        self.b = tensor(np.zeros(out_features), requires_grad=True, dtype=dtype) if bias else None
        if self.b is not None:
            self.b.name = "b"

    def forward(self, x: Tensor) -> Tensor:
        out = x @ self.W
        return out + self.b if self.b is not None else out

    def __repr__(self) -> str:
        return f"Linear({self.in_features} -> {self.out_features})"


class ReLU(Module):
    """max(x, 0) elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Tanh(Module):
    """tanh elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Sigmoid(Module):
    """Logistic sigmoid elementwise."""

    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


ACTIVATIONS: dict[str, type[Module]] = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid}


class Sequential(Module):
    """Apply layers in order: ``Sequential(a, b, c)(x) == c(b(a(x)))``."""

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not callable(layer):
                raise TypeError(f"Sequential: layer {i} ({layer!r}) is not callable")
        self.layers = list(layers)

    def forward(self, x: Tensor) -> Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def __getitem__(self, i: int) -> Module:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = ", ".join(repr(layer) for layer in self.layers)
        return f"Sequential({inner})"


class MLP(Sequential):
    """A multilayer perceptron: Linear layers of the given ``sizes`` with an activation
    between them (none after the last, which outputs logits or regression values).

    ``MLP([64, 128, 10], activation="relu", init="he_normal")``
    """

    def __init__(
        self,
        sizes: list[int],
        activation: str = "relu",
        init: str | Callable[..., np.ndarray] | None = None,
        seed: int | None = 0,
        dtype: str = "float64",
    ) -> None:
        if len(sizes) < 2:
            raise ValueError(f"MLP needs at least an input and an output size, got {sizes}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; use one of {list(ACTIVATIONS)}")
        if init is None:
            init = "he_normal" if activation == "relu" else "xavier_uniform"
        rng = np.random.default_rng(seed)
        layers: list[Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(Linear(n_in, n_out, init=init, seed=rng, dtype=dtype))
            if i < len(sizes) - 2:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)
        self.sizes = list(sizes)
        self.activation = activation

    def __repr__(self) -> str:
        return f"MLP({self.sizes}, activation={self.activation!r})"
