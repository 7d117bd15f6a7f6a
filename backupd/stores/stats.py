"""What a store's operations went through (retries, late successes, failures), for metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class RetryStats:
    """What one store's operations went through, for metrics; shared by its wrappers
    (``open_store``), updated under ``lock``."""

    retries: int = 0
    recovered: int = 0
    gave_up: int = 0
    errors: int = 0  # operations that failed for good (retries exhausted, a permanent error, store down)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, **increments: int) -> None:
        with self.lock:
            for name, n in increments.items():
                setattr(self, name, getattr(self, name) + n)
