"""The exception hierarchy shared by backupd and restore.

Library code raises these; only the command-line edge (``backupd.cli`` and ``restore.cli``)
turns them into messages and exit codes (see ``exit_code_for``). Every error carries a one-line
``message`` that names the thing at fault (file, key, shard, target, store, object), an optional
``detail`` (for example the tail of a child process's stderr) and an optional ``hint`` telling
the user what to do next.
"""

from __future__ import annotations


class BackupdError(Exception):
    """Base class of every error backupd reports to a user."""

    def __init__(self, message: str, *, detail: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(BackupdError):
    """The configuration file is missing, unreadable or invalid (exit 2)."""


class UsageError(BackupdError):
    """A command-line argument names something that does not exist or is malformed (exit 2)."""


class SourceError(BackupdError):
    """The producer of a backup stream (mysqldump, the server) failed."""


class ServerError(BackupdError):
    """A MySQL/MariaDB server could not be reached or refused a statement."""


class StoreError(BackupdError):
    """An object store operation failed.

    ``store`` is the configured store name and ``key`` the object involved (if any).
    """

    def __init__(self, message: str, *, store: str, key: str | None = None,
                 detail: str | None = None, hint: str | None = None):
        super().__init__(message, detail=detail, hint=hint)
        self.store = store
        self.key = key


class ObjectNotFound(StoreError):
    """The object does not exist in the store."""


class TransientStoreError(StoreError):
    """A failure that may succeed if retried: the store answered, badly (5xx, throttling), or a
    transfer broke off after it had started (a reset mid-transfer)."""


class StoreUnreachable(StoreError):
    """The store did not answer at all: connection refused, DNS failure, a connect timeout, or no
    answer within the timeout. Not retried: the store is marked down for the process
    (``backupd.stores.health``), probed in the background, and the work goes on without it."""


class PermanentStoreError(StoreError):
    """A failure that retrying cannot fix (authentication, missing bucket, permissions).

    ``status`` is the HTTP status when the store answered one (0 otherwise)."""

    status: int = 0


class CatalogError(BackupdError):
    """A manifest cannot be read or does not describe a usable backup."""


class UnsupportedFormat(CatalogError):
    """A manifest has a ``format_version`` this build does not understand."""


class BackupFailed(BackupdError):
    """A backup could not be committed; nothing of it was left behind."""


class LockHeld(BackupdError):
    """Another run holds the shard's backup lock (its owner is named in the message)."""


class LockLost(BackupFailed):
    """This run's shard lock expired or was taken over before the backup could commit."""


class NoBackupFound(BackupdError):
    """No committed backup matches what was asked for."""


class RestoreFailed(BackupdError):
    """A restore could not be completed."""


class TargetNotEmpty(RestoreFailed):
    """The restore target already holds data the restore would overwrite."""


class IncompatibleTarget(RestoreFailed):
    """The target cannot take this backup (another server vendor or major version)."""


class InsufficientSpace(RestoreFailed):
    """The target's disk has less free space than the restore needs."""


class ReplicationFailed(BackupdError):
    """A restored target could not be attached as a replica, or did not catch up."""


class VerificationError(BackupdError):
    """Data read back does not match what was recorded (exit 3)."""


class CorruptPart(VerificationError):
    """A stored part's size, sha256 or zstd frame is wrong in every store that holds it."""


class DataMismatch(VerificationError):
    """Restored tables differ from the backup's per-table reference. ``report`` carries the
    restore's report (``restore.runner.RestoreReport``), so ``restore --json`` can print it."""

    report: object | None = None


EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_VERIFICATION = 3


def exit_code_for(error: BaseException) -> int:
    """Map an exception to the documented exit code: 2 usage/config, 3 verification, else 1."""
    if isinstance(error, (ConfigError, UsageError)):
        return EXIT_USAGE
    if isinstance(error, VerificationError):
        return EXIT_VERIFICATION
    return EXIT_FAILED
