"""Fetching parts (for restores and sync): every byte verified before anyone may use it.

For each part, the stores are tried in the target's ``read_from`` order; a part that is missing,
unreadable, of the wrong size or whose sha256 differs in one store is fetched from the next
(said on stderr through the log). Only a part whose size and sha256 match the manifest is
handed on. One part is prefetched while the previous one is applied, so memory stays at about
two parts. A store that fails with an error other than "not found" (down, unreachable after its
retry budget, refusing access) is tried last for the following parts, so a dead cloud costs
its retry budget once, not once per part.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from backupd.errors import CorruptPart, ObjectNotFound, RestoreFailed, StoreError
from backupd.repo.model import Manifest, PartRecord
from backupd.stores.base import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Turns a verified part's stored bytes into its zstd frame (decrypts an encrypted backup's
# parts, ``backupd.repo.keyring``), raising ``CorruptPart`` naming the part if it cannot.
Opener = Callable[[PartRecord, bytes], bytes]


class PartFetcher:
    """Verified parts of one backup (``backup_id``) from ``stores``, in preference order."""

    def __init__(self, stores: list[Store], backup_id: str, parts: list[PartRecord], *, owner: str | None = None,
                 opener: Opener | None = None):
        """``owner``: how messages name what the parts belong to (default ``backup <id>``).
        ``opener``: what ``verified_parts`` hands on is ``opener(part, stored bytes)`` (the
        decrypted frame); without it, the stored bytes (sync copies ciphertext as it is)."""
        self.stores = stores
        self.backup_id = backup_id
        self.parts = parts
        self.owner = owner or f"backup {backup_id}"
        self.opener = opener
        self._down: set[str] = set()

    @classmethod
    def of(cls, stores: list[Store], manifest: Manifest, opener: Opener | None) -> PartFetcher:
        """The fetcher of a backup's parts; ``opener`` is required for an encrypted backup (its
        parts are not zstd frames until opened)."""
        if manifest.encryption is not None and opener is None:
            raise ValueError(f"backup {manifest.id} is encrypted: its parts need an opener")
        return cls(stores, manifest.id, manifest.parts, opener=opener)

    def _ordered(self) -> list[Store]:
        """Stores in preference order, those that failed before moved to the end."""
        return [s for s in self.stores if s.name not in self._down] + \
            [s for s in self.stores if s.name in self._down]

    def _failed(self, store: Store, exc: StoreError) -> None:
        if store.name not in self._down:
            self._down.add(store.name)
            log.warning("store %s failed (%s); it is tried last from now on", store.name, exc)

    def preflight(self) -> None:
        """Check, before anything is applied, that every part exists at its size somewhere."""
        for part in self.parts:
            problems = []
            for store in self._ordered():
                try:
                    size = store.stat(part.key).size
                except ObjectNotFound as exc:
                    problems.append(f"{store.name}: {exc}")
                    continue
                except StoreError as exc:
                    self._failed(store, exc)
                    problems.append(f"{store.name}: {exc}")
                    continue
                if size == part.size:
                    break
                problems.append(f"{store.name}: size {size}, expected {part.size}")
            else:
                raise CorruptPart(f"part {part.key} of {self.owner} is missing or "
                                  f"damaged in every store ({'; '.join(problems)})")

    def fetch(self, part: PartRecord) -> bytes:
        """The verified bytes of ``part`` from the first store that has a good copy."""
        problems: list[str] = []
        corrupt = False
        for store in self._ordered():
            try:
                data = store.get(part.key)
            except ObjectNotFound:
                problems.append(f"{store.name}: missing")
                corrupt = True
                continue
            except StoreError as exc:
                self._failed(store, exc)
                problems.append(f"{store.name}: {exc}")
                continue
            problem = check_part(data, part)
            if problem is None:
                if problems:
                    log.warning("part %s: read from store %s after: %s", part.key, store.name,
                                "; ".join(problems))
                return data
            corrupt = True
            problems.append(f"{store.name}: {problem}")
            log.warning("part %s in store %s is bad (%s); trying the next store", part.key,
                        store.name, problem)
        message = f"part {part.key} of {self.owner}: no good copy ({'; '.join(problems)})"
        raise CorruptPart(message) if corrupt else RestoreFailed(message)

    def verified_parts(self, parts: list[PartRecord] | None = None) -> Iterator[tuple[PartRecord, bytes]]:
        """Yield ``(part, bytes)`` for ``parts`` (default: all of the backup's) in order, each
        verified (and opened, with an opener: decrypted, every chunk authenticated), the next
        one fetched meanwhile."""
        yield from prefetched(self.parts if parts is None else parts, self._fetch_opened)

    def _fetch_opened(self, part: PartRecord) -> bytes:
        data = self.fetch(part)
        return data if self.opener is None else self.opener(part, data)


def prefetched(items: Sequence[T], fetch: Callable[[T], R]) -> Iterator[tuple[T, R]]:
    """Yield ``(item, fetch(item))`` in order, fetching the next item in a thread while the
    caller works on the current one: at most two results are held at a time."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="fetch") as pool:
        pending: Future[R] | None = pool.submit(fetch, items[0]) if items else None
        for i, item in enumerate(items):
            assert pending is not None
            result = pending.result()
            pending = pool.submit(fetch, items[i + 1]) if i + 1 < len(items) else None
            yield item, result
            del result


def check_part(data: bytes, part: PartRecord) -> str | None:
    """None if ``data`` is exactly the part the manifest recorded (size and sha256), else what
    differs. Every read of a part goes through here before its bytes are used."""
    if len(data) != part.size:
        return f"size {len(data)}, the manifest says {part.size}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != part.sha256:
        return f"sha256 {digest[:12]}..., the manifest says {part.sha256[:12]}..."
    return None
