"""Spec variants shared by the chapter 13-15 exercises (not an exercise module itself)."""

from __future__ import annotations

from dataclasses import dataclass

from backprop_lab.checks.oracle.spec import ValueSpec

__all__ = ["LabeledValueSpec"]


@dataclass
class LabeledValueSpec(ValueSpec):
    """A ValueSpec whose answer's arguments have their own names (``arg_labels``), for
    answers whose arguments are not the drawn inputs in order (extra arguments, a budget)."""

    arg_labels: tuple[str, ...] = ()

    def arg_names(self) -> list[str]:
        return list(self.arg_labels) or super().arg_names()
