"""A string that never shows itself in reprs, logs or tracebacks."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Secret:
    """Wraps a credential; ``repr`` and ``str`` print ``**redacted**``, ``reveal()`` the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        """Return the clear value, to be passed to exactly one client and nowhere else."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**redacted**')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class SecretRef:
    """A secret read where and when it is first needed (an environment variable, a file), so a
    command reads only the secrets of what it touches. ``read`` raises the error that names the
    configuration key at fault; a value once read is kept."""

    __slots__ = ("_read", "_value", "_lock")

    def __init__(self, read: Callable[[], Secret]):
        self._read = read
        self._value: Secret | None = None
        self._lock = threading.Lock()

    def get(self) -> Secret:
        with self._lock:
            if self._value is None:
                self._value = self._read()
            return self._value

    def __repr__(self) -> str:
        return "SecretRef('**redacted**')"


def reveal(value: Secret | SecretRef | None) -> Secret | None:
    """The secret behind ``value``, read now if it has not been."""
    return value.get() if isinstance(value, SecretRef) else value
