"""Parsing and formatting of human sizes ("64MiB") and durations ("8h", "1h30m")."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_size(text: str | int) -> int:
    """Return the number of bytes in ``text`` ("64MiB", "1.5GB", "4096" or an int).

    Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB...) of 1000.
    Raises ValueError on anything else, including negative numbers.
    """
    if isinstance(text, bool):
        raise ValueError("expected a size such as \"64MiB\"")
    if isinstance(text, int):
        if text < 0:
            raise ValueError("a size cannot be negative")
        return text
    match = _SIZE_RE.match(text)
    unit = match.group(2).lower() if match else None
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"{text!r} is not a size such as \"64MiB\" or \"1GB\"")
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def parse_duration(text: str | int | float) -> float:
    """Return the seconds in ``text`` ("8h", "90m", "1h30m", "2d", "500ms", or a number of s)."""
    if isinstance(text, bool):
        raise ValueError("expected a duration such as \"8h\"")
    if isinstance(text, (int, float)):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    compact = text.replace(" ", "").lower()
    if not compact or _DURATION_RE.sub("", compact):
        raise ValueError(f"{text!r} is not a duration such as \"8h\", \"90m\" or \"1h30m\"")
    return sum(float(n) * _DURATION_SECONDS[u] for n, u in _DURATION_RE.findall(compact))


def format_size(n: float) -> str:
    """Format a byte count for people: 1536 -> "1.5 KiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float) -> str:
    """Format seconds for people: 3725 -> "1h02m05s", 2.5 -> "2.50s"."""
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
