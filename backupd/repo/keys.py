"""Key pairs, and the key objects that wrap each backup's data key for its recipients.

Key pairs are X25519 (PyNaCl's ``PrivateKey``). As text (``backupd keys generate`` writes
them)::

    backupd-pub-<64 hex digits: the 32-byte public key>
    BACKUPD-SECRET-<64 hex digits: the 32-byte private key>

A key's id is the first 16 hex digits of the sha256 of its public key: what errors, key
objects and ``backupd keys`` name. A private key file holds one or more secret lines (comments
start with ``#``); every one is tried.

A key object is stored beside what it unlocks, sealed like every metadata object
(``backupd.repo.sealed``)::

    <shard>/<backup_id>/key.json            the backup's data key
    binlogs/<shard>/keys/<run>.json         a binlog archiver run's data key

It holds the data key once per recipient, each sealed to that recipient's public key with
libsodium's sealed box (``crypto_box_seal``: an ephemeral X25519 key, XSalsa20-Poly1305), and
the key's ``check`` (``backupd.repo.encryption.DataKey.check``), which the manifest records too:
an unwrapped key is used only if it is the one the data was encrypted with. A backup host needs
the recipients' public keys only; it can write backups it cannot read.

Re-wrapping (``rewrap``) replaces a key object with one for another set of recipients, holding
the same data key: the parts and the manifest are not touched.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backupd.config.sections import PUBLIC_KEY_PATTERN, EncryptionConfig
from backupd.errors import CatalogError, ObjectNotFound, StoreError, UsageError
from backupd.repo.encryption import DataKey
from backupd.repo.layout import binlog_prefix, key_object_key
from backupd.repo.sealed import parse_json, seal, unseal
from backupd.stores.base import Store

log = logging.getLogger(__name__)

PUBLIC_PREFIX = "backupd-pub-"
SECRET_PREFIX = "BACKUPD-SECRET-"
PUBLIC_PATTERN = re.compile(PUBLIC_KEY_PATTERN)  # the configuration checks recipients with it
SECRET_PATTERN = re.compile(rf"^{SECRET_PREFIX}[0-9A-F]{{64}}$")
KEY_OBJECT_FORMAT = 1


class KeyUnavailable(UsageError):
    """An encrypted backup cannot be opened with the private keys given (exit 2): none given, or
    none of them is a recipient. The message names the backup and its recipients' key ids."""


class BadKey(UsageError):
    """A public or private key's text is malformed (exit 2)."""


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id_of(public: bytes) -> str:
    return hashlib.sha256(public).hexdigest()[:16]


@dataclass(frozen=True)
class Recipient:
    """A public key backups are encrypted for."""

    public: PublicKey

    @classmethod
    def parse(cls, text: str, *, what: str = "public key") -> Recipient:
        text = text.strip()
        if not PUBLIC_PATTERN.match(text):
            raise BadKey(f"{what}: not a backupd public key (expected {PUBLIC_PREFIX} and 64 hex digits)")
        return cls(PublicKey(bytes.fromhex(text[len(PUBLIC_PREFIX):])))

    @property
    def key_id(self) -> str:
        return key_id_of(bytes(self.public))

    @property
    def text(self) -> str:
        return PUBLIC_PREFIX + bytes(self.public).hex()


class Identity:
    """A private key: it opens what was wrapped for its public key. Never printed."""

    __slots__ = ("_private",)

    def __init__(self, private: PrivateKey):
        self._private = private

    @classmethod
    def generate(cls) -> Identity:
        return cls(PrivateKey.generate())

    @property
    def recipient(self) -> Recipient:
        return Recipient(self._private.public_key)

    @property
    def key_id(self) -> str:
        return self.recipient.key_id

    @property
    def secret_text(self) -> str:
        return SECRET_PREFIX + bytes(self._private).hex().upper()

    def unseal(self, wrapped: bytes) -> bytes:
        return SealedBox(self._private).decrypt(wrapped)

    def __repr__(self) -> str:
        return f"Identity(key id {self.key_id})"


def parse_identities(text: str, *, what: str) -> list[Identity]:
    """The private keys in a key file's text (or an environment variable's): one per line,
    ``#`` comments and blank lines ignored. ``BadKey`` naming ``what`` if a line is not a key or
    there is none."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if not SECRET_PATTERN.match(line):
            raise BadKey(f"{what}: line {number} is not a backupd private key (expected {SECRET_PREFIX}...)")
        found.append(Identity(PrivateKey(bytes.fromhex(line[len(SECRET_PREFIX):]))))
    if not found:
        raise BadKey(f"{what}: holds no private key")
    return found


def recipients_of(config: EncryptionConfig) -> list[Recipient]:
    """The configured recipients (``[encryption] recipients``), parsed."""
    return [Recipient.parse(text, what=f"encryption.recipients[{i}]") for i, text in enumerate(config.recipients)]


def identities_of(config: EncryptionConfig) -> list[Identity]:
    """The configured private keys (none when neither ``private_key_file`` nor
    ``private_key_env`` is set)."""
    secret = config.private_keys
    if secret is None:
        return []
    where = f"encryption.private_key_file ({config.private_key_file})" if config.private_key_file \
        else f"encryption.private_key_env ({config.private_key_env})"
    return parse_identities(secret.reveal(), what=where)


def key_file_text(identity: Identity, created: datetime) -> str:
    """What ``backupd keys generate`` writes: the secret line, with its public key and id as comments."""
    return (f"# backupd private key, created {created.isoformat(timespec='seconds')}\n"
            f"# key id: {identity.key_id}\n"
            f"# public key: {identity.recipient.text}\n"
            f"{identity.secret_text}\n")


# --------------------------------------------------------------------------- key objects
class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WrappedKey(_Record):
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    sealed: str  # base64url of crypto_box_seal(data key, recipient)


class KeyObject(_Record):
    """The data key of one backup (``scope`` "backup") or binlog run ("binlogs"), wrapped for
    each recipient (module docstring)."""

    format_version: Literal[1] = 1  # KEY_OBJECT_FORMAT
    scope: Literal["backup", "binlogs"]
    shard: str
    owner: str  # the backup id, or the binlog run
    cipher: Literal["xchacha20poly1305-secretstream"] = "xchacha20poly1305-secretstream"  # CIPHER
    key_check: str
    recipients: list[WrappedKey] = Field(min_length=1)

    @property
    def object_key(self) -> str:
        return key_object_key(self.shard, self.owner) if self.scope == "backup" \
            else binlog_key_object_key(self.shard, self.owner)

    @property
    def key_ids(self) -> list[str]:
        return [r.key_id for r in self.recipients]

    @property
    def what(self) -> str:
        return f"backup {self.owner}" if self.scope == "backup" else f"binlog run {self.owner} of shard {self.shard}"

    @classmethod
    def wrap(cls, key: DataKey, recipients: list[Recipient], *, scope: Literal["backup", "binlogs"], shard: str,
             owner: str) -> KeyObject:
        if not recipients:
            raise UsageError("encryption needs at least one recipient public key")
        unique = {r.key_id: r for r in recipients}
        return cls(scope=scope, shard=shard, owner=owner, key_check=key.check,
                   recipients=[WrappedKey(key_id=kid, sealed=_b64(SealedBox(r.public).encrypt(key.reveal())))
                               for kid, r in sorted(unique.items())])

    def unwrap(self, identities: list[Identity], *, expected_check: str | None = None) -> DataKey:
        """The data key, opened with the first identity that is a recipient. ``KeyUnavailable``
        names the recipients when none is; a wrapped key that opens but is not the data key
        (``key_check``, and ``expected_check`` from the manifest) is ``CatalogError``."""
        mine = {i.key_id: i for i in identities}
        for wrapped in self.recipients:
            identity = mine.get(wrapped.key_id)
            if identity is None:
                continue
            try:
                key = DataKey(identity.unseal(_unb64(wrapped.sealed)))
            except (CryptoError, ValueError):
                raise CatalogError(f"key object of {self.what}: the key wrapped for {wrapped.key_id} "
                                   "does not open with that private key") from None
            for check in (self.key_check, expected_check):
                if check is not None and not key.matches(check):
                    raise CatalogError(f"key object of {self.what}: the key wrapped for {wrapped.key_id} is "
                                       "not the one the data was encrypted with")
            return key
        given = ", ".join(sorted(mine)) if mine else "none"
        raise KeyUnavailable(
            f"{self.what} is encrypted for key id{'s' * (len(self.recipients) > 1)} "
            f"{', '.join(self.key_ids)}; the private keys given: {given}",
            hint="set [encryption] private_key_file (or private_key_env) to a recipient's private key")

    def to_json(self) -> bytes:
        return seal(self.model_dump(mode="json"))

    @classmethod
    def from_json(cls, data: bytes, *, origin: str) -> KeyObject:
        what = f"key object {origin}"
        document = unseal(parse_json(data, what=what), what=what, required=True)
        if document.get("format_version") != KEY_OBJECT_FORMAT:
            raise CatalogError(f"{what} has format_version {document.get('format_version')!r}; this backupd "
                               f"reads {KEY_OBJECT_FORMAT}")
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise CatalogError(f"{what} is invalid: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def key_copy_problem(data: bytes, origin: str, key_check: str) -> str | None:
    """What is wrong with one stored copy of a key object whose data key must be the one
    ``key_check`` names (None: nothing): unreadable, altered (its seal), or another key."""
    try:
        key_object = KeyObject.from_json(data, origin=origin)
    except CatalogError as exc:
        return exc.message
    return None if key_object.key_check == key_check else "it wraps another data key than the manifest names"


def binlog_key_object_key(shard: str, run: str) -> str:
    return f"{binlog_prefix(shard)}keys/{run}.json"


def binlog_key_prefix(shard: str) -> str:
    return f"{binlog_prefix(shard)}keys/"


@dataclass(frozen=True)
class KeyCopy:
    """One store's copy of a key object, parsed (``problem`` when it is missing or unreadable)."""

    store: str
    key_object: KeyObject | None
    problem: str | None = None


def read_key_copies(stores: list[Store], object_key: str) -> list[KeyCopy]:
    """Every store's copy of the key object at ``object_key``, in store order."""
    copies = []
    for store in stores:
        try:
            data = store.get(object_key)
        except ObjectNotFound:
            copies.append(KeyCopy(store.name, None, "missing"))
            continue
        except StoreError as exc:
            copies.append(KeyCopy(store.name, None, str(exc)))
            continue
        try:
            copies.append(KeyCopy(store.name, KeyObject.from_json(data, origin=f"{store.name}:{object_key}")))
        except CatalogError as exc:
            copies.append(KeyCopy(store.name, None, exc.message))
    return copies


def open_key(stores: list[Store], object_key: str, identities: list[Identity], *, what: str,
             expected_check: str | None = None) -> DataKey:
    """The data key behind ``object_key``, from the first store's copy that opens with one of
    ``identities`` (copies may differ while a rewrap runs: each is tried). ``KeyUnavailable``
    (exit 2) names ``what`` and every recipient key id seen; ``CatalogError`` when no store has
    a readable copy."""
    copies = read_key_copies(stores, object_key)
    unavailable: list[KeyUnavailable] = []
    problems = []
    for copy in copies:
        if copy.key_object is None:
            problems.append(f"{copy.store}: {copy.problem}")
            continue
        try:
            return copy.key_object.unwrap(identities, expected_check=expected_check)
        except KeyUnavailable as exc:
            unavailable.append(exc)
        except CatalogError as exc:
            problems.append(f"{copy.store}: {exc.message}")
    if unavailable:
        seen = sorted({kid for c in copies if c.key_object for kid in c.key_object.key_ids})
        given = ", ".join(sorted(i.key_id for i in identities)) or "none"
        raise KeyUnavailable(f"{what} is encrypted for key id{'s' * (len(seen) > 1)} {', '.join(seen)}; "
                             f"the private keys given: {given}", hint=unavailable[0].hint)
    raise CatalogError(f"{what}: no readable key object ({'; '.join(problems) or 'no store'})")
