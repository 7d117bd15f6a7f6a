"""A string that never shows itself in reprs, logs or tracebacks."""

from __future__ import annotations


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
