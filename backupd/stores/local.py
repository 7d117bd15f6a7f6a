"""A store on a local or mounted filesystem.

Objects are files under ``path/prefix``; ``put`` writes a hidden temporary file beside the
destination, fsyncs it and renames it into place (then fsyncs the folder), so an object is
either absent or whole, and a crash leaves at worst a ``.tmp-`` file that ``list`` never shows.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from backupd.errors import ObjectNotFound, PermanentStoreError, StoreError, TransientStoreError
from backupd.stores.base import ObjectInfo, ObjectStream, Payload, Store, StoreProperties

_TMP_MARK = ".tmp-"
_TRANSIENT_ERRNOS = {errno.EAGAIN, errno.EINTR, errno.EBUSY, errno.ETIMEDOUT}


class LocalStore(Store):
    properties = StoreProperties(connections=4, max_object_size=2**63 - 1)

    def __init__(self, name: str, path: str | os.PathLike[str], prefix: str = ""):
        self.name = name
        self.root = Path(path) / prefix.strip("/") if prefix.strip("/") else Path(path)

    def describe(self) -> str:
        return f"{self.name} (local {self.root})"

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts) \
                or _TMP_MARK in parts[-1]:
            raise PermanentStoreError(f"store {self.name}: invalid object key {key!r}",
                                      store=self.name, key=key)
        return self.root.joinpath(*parts)

    def _error(self, exc: OSError, action: str, key: str | None) -> StoreError:
        what = f"store {self.name}: cannot {action} {key or self.root}: {exc.strerror or exc}"
        if isinstance(exc, FileNotFoundError):
            return ObjectNotFound(f"store {self.name}: object {key} not found", store=self.name, key=key)
        cls = TransientStoreError if exc.errno in _TRANSIENT_ERRNOS else PermanentStoreError
        return cls(what, store=self.name, key=key)

    def put(self, key: str, payload: Payload) -> None:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                with os.fdopen(fd, "wb", closefd=True) as out:
                    for chunk in payload:
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(tmp, path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            _fsync_dir(path.parent)
        except OSError as exc:
            raise self._error(exc, "write", key) from None

    def put_if_absent(self, key: str, payload: Payload) -> bool:
        # Written in full to a temporary file, then hard-linked into place: link() fails if the
        # name exists, so exactly one racing creator wins and readers never see a partial file.
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb", closefd=True) as out:
                    for chunk in payload:
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            finally:
                tmp.unlink(missing_ok=True)
            _fsync_dir(path.parent)
            return True
        except OSError as exc:
            raise self._error(exc, "write", key) from None

    def open(self, key: str) -> ObjectStream:
        try:
            return open(self._path(key), "rb")
        except OSError as exc:
            raise self._error(exc, "read", key) from None

    def stat(self, key: str) -> ObjectInfo:
        try:
            return ObjectInfo(key, self._path(key).stat().st_size)
        except OSError as exc:
            raise self._error(exc, "stat", key) from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the deepest folder the prefix fully names, then filter by the prefix string.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        found: list[ObjectInfo] = []
        try:
            for dirpath, _dirs, files in os.walk(start):
                rel = Path(dirpath).relative_to(self.root).as_posix()
                for file in files:
                    if _TMP_MARK in file:
                        continue
                    key = file if rel == "." else f"{rel}/{file}"
                    if key.startswith(prefix):
                        try:
                            size = os.stat(os.path.join(dirpath, file)).st_size
                        except FileNotFoundError:
                            continue  # deleted while listing
                        found.append(ObjectInfo(key, size))
        except OSError as exc:
            raise self._error(exc, "list", prefix) from None
        yield from sorted(found, key=lambda info: info.key)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise self._error(exc, "delete", key) from None
        self._prune_empty_dirs(path.parent)

    def _prune_empty_dirs(self, folder: Path) -> None:
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
