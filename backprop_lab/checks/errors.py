"""The exception a failing check raises in strict mode."""

from __future__ import annotations


class CheckFailure(AssertionError):
    """A check failed; the message is written for the student."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message
