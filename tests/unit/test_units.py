import pytest

from backupd.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize("text,expected", [
    ("64MiB", 64 * 1024**2), ("1GiB", 1024**3), ("1.5KiB", 1536), ("10MB", 10_000_000),
    ("4096", 4096), (4096, 4096), (" 2 gib ", 2 * 1024**3), ("0", 0),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-1MiB", "1..2MB", True, -5])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("text,expected", [
    ("8h", 28800), ("90m", 5400), ("1h30m", 5400), ("2d", 172800), ("500ms", 0.5), (30, 30.0),
    ("1w", 604800),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "8", "h", "8 hours", "1h-30m", True])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_formatting():
    assert format_size(1536) == "1.5 KiB"
    assert format_size(12) == "12 B"
    assert format_duration(2.5) == "2.50s"
    assert format_duration(3725) == "1h02m05s"
