"""scripts/bench's entry point: the suites live in scripts/benchmarks/ (``cli`` holds the command line)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO)]

from benchmarks.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
