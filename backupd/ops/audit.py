"""Backup integrity audits: is every committed backup still whole, restorable and fresh?

``quick`` reads listings and manifests only (no part data):

* every manifest parses, has a known format version and passes its self-check
  (``manifest-unreadable`` when no store holds a good copy); copies of one manifest that differ
  between stores, a bad one beside a good one or two good ones that disagree, are
  ``manifest-mismatch`` (naming the stores; the good copy is used for every other check);
* the provider's own checksum of every part copy (``part-checksum``): Swift's ETag and S3's
  single-request ETag are the MD5 the manifest records, and every listing carries them, so this
  costs no request and no download. With ``heads`` (``--heads``; the daemon's deep audits) every
  copy is also HEADed: a copy the provider lists but no longer serves (its own auditor
  quarantined it) is ``part-missing``, and S3 with SSE-KMS (whose ETag is no MD5) reports the
  ``ChecksumSHA256`` it verified at upload;
* every part of every committed backup is in every store its manifest names as complete, at its
  recorded size (``part-missing``, ``part-size``), and so is the manifest (``store-lacks``);
  where stores list an MD5 ETag (S3, Swift), the copies of a part agree (``part-etag``);
* every store of the shard holds every committed backup (``store-lacks``, with a hint to run
  ``backupd sync``);
* the shard has a restorable chain (``no-chain``);
* RPO: the newest full is younger than ``full_every`` + grace (``rpo-full``) and the newest
  backup younger than ``incremental_every`` + grace (``rpo-backup``);
* parts with no manifest in any store, older than ``orphan_age`` (``orphan``);
* stores that cannot be listed (``store-unreachable``);
* the binlog archive (shards that archive binlogs, or have an archive): every range from the
  oldest kept backup's coordinates on is there (``binlog-gap``: e.g. the server purged a binlog
  before it was archived, or a segment was lost from every store), the archive is younger than
  ``[binlogs] max_lag`` (``binlog-lag``), and every store holds every segment
  (``binlog-segment-missing``).

An encrypted backup's key object must be in every store that holds its manifest
(``key-object-missing``); the deep audit reads each copy and checks its seal and that it wraps
the data key the manifest names (``key-object-corrupt``).

``deep`` also downloads every part from every store that holds it (or a ``sample`` percentage of
them), checks its size and sha256 and decodes its zstd frame (``part-corrupt``); binlog
segments the same way, their events parsed too (``binlog-segment-corrupt``). Encrypted parts and
segments are checked by their sha256 without any key (the stored bytes are the ciphertext);
with a private key configured (``[encryption] private_key_file``), every chunk is also
authenticated and the frame decoded, and a backup that key cannot open is ``key-unavailable``
(a restore with this configuration would fail). Without one, ``content_unchecked`` counts the
copies whose plaintext was not checked. The sample is a
window over a hash of each part's key that moves every day, so repeated daily audits of p%
cover everything within 100/p days (restic's ``--read-data-subset`` idea).

Contract: ``run_audit`` never raises for a fault it is looking for; every fault is a Finding
naming the shard, backup, store and part involved. It raises only for usage errors.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import zstandard

from backupd.config import Config
from backupd.errors import CatalogError, CorruptPart, NoBackupFound, ObjectNotFound, StoreError, UsageError
from backupd.mysql.binlog_events import BinlogFormatError, read_events
from backupd.ops.checksums import MD5, has_provider_checksum, provider_mismatch
from backupd.policy.planner import plan_restore
from backupd.progress import Progress
from backupd.repo.annotations import AUDIT_ANNOTATION, annotate
from backupd.repo.binlogs import BinlogArchive, SegmentRecord
from backupd.repo.catalog import Catalog, CatalogEntry
from backupd.repo.codec import PartDecodeError, decode_part
from backupd.repo.fetch import Opener, check_part, prefetched
from backupd.repo.keyring import KeyRing
from backupd.repo.keys import KeyUnavailable, identities_of, key_copy_problem
from backupd.repo.layout import format_id_time, key_object_key, parse_id_time, parse_key
from backupd.repo.model import Manifest, PartRecord, utc_now
from backupd.repo.repository import Repository
from backupd.stores.base import ObjectInfo, Store
from backupd.units import format_duration

log = logging.getLogger(__name__)

LEVELS = ("quick", "deep")
HEAD_THREADS = 8  # concurrent HEADs of the provider check


@dataclass(frozen=True)
class Finding:
    """One thing that does not hold, and exactly where."""

    check: str
    message: str
    shard: str | None = None
    backup: str | None = None
    store: str | None = None
    part: str | None = None
    hint: str | None = None


@dataclass
class AuditReport:
    level: str
    started_at: datetime
    shards: list[str]
    stores: list[str]
    backups: int = 0
    parts_checked: int = 0
    heads: int = 0  # provider-checksum HEAD requests (no data)
    content_unchecked: int = 0  # encrypted copies checked by sha256 only (no private key configured)
    bytes_read: int = 0
    seconds: float = 0.0
    sample_percent: float = 100.0
    findings: list[Finding] = field(default_factory=list)
    newest: dict[str, tuple[str, list[str]]] = field(default_factory=dict)  # shard: (backup id, stores)

    @property
    def ok(self) -> bool:
        return not self.findings

    def findings_by_shard(self) -> dict[str, int]:
        counts = {shard: 0 for shard in self.shards}
        for finding in self.findings:
            if finding.shard in counts:
                counts[finding.shard] += 1
        return counts

    @property
    def throughput(self) -> float:
        """Bytes read per second (deep audits)."""
        return self.bytes_read / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """What ``backupd audit --json`` prints (and the daemon reads back with ``from_json``)."""
        return {
            "level": self.level, "ok": self.ok,
            "started_at": self.started_at.isoformat().replace("+00:00", "Z"),
            "seconds": round(self.seconds, 3), "shards": self.shards, "stores": self.stores,
            "backups": self.backups, "parts_checked": self.parts_checked, "heads": self.heads,
            "bytes_read": self.bytes_read, "throughput": round(self.throughput),
            "sample_percent": self.sample_percent, "content_unchecked": self.content_unchecked,
            "findings": [asdict(f) for f in self.findings],
        }

    @classmethod
    def from_json(cls, document: dict[str, Any]) -> AuditReport:
        """The report ``to_json`` printed; raises ``ValueError`` if ``document`` is not one."""
        try:
            return cls(level=str(document["level"]),
                       started_at=datetime.fromisoformat(str(document["started_at"]).replace("Z", "+00:00")),
                       shards=[str(s) for s in document["shards"]], stores=[str(s) for s in document["stores"]],
                       backups=int(document["backups"]), parts_checked=int(document["parts_checked"]),
                       heads=int(document.get("heads", 0)),
                       bytes_read=int(document["bytes_read"]), seconds=float(document["seconds"]),
                       sample_percent=float(document["sample_percent"]),
                       findings=[Finding(**f) for f in document["findings"]])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an audit report: {exc!r}") from None


def record_audit(repo: Repository, report: AuditReport) -> None:
    """Annotate each audited shard's newest backup with the audit's outcome for that shard
    (``audit-<level>-<time>``): when it ran, and per store it looked at the checks that found
    something there (``stores``; ``backupd status`` and ``list`` call those stores suspect)."""
    stamp = format_id_time(report.started_at)
    for shard, (backup_id, found_in) in report.newest.items():
        findings = [f for f in report.findings if f.shard == shard]
        by_store: dict[str, list[str]] = {name: [] for name in report.stores}
        by_backup: dict[str, dict[str, list[str]]] = {}
        for finding in findings:
            for name in (finding.store or "").split(","):
                if name in by_store and finding.check not in by_store[name]:
                    by_store[name].append(finding.check)
                if name in by_store and finding.backup:
                    checks = by_backup.setdefault(finding.backup, {}).setdefault(name, [])
                    if finding.check not in checks:
                        checks.append(finding.check)
        annotate(repo.stores(s for s in found_in if s in report.stores), shard, backup_id,
                 f"{AUDIT_ANNOTATION}{report.level}-{stamp}",
                 {"kind": "audit", "level": report.level, "at": stamp, "ok": not findings,
                  "findings": len(findings), "checks": sorted({f.check for f in findings}),
                  "stores": {name: sorted(checks) for name, checks in by_store.items()}, "backups": by_backup,
                  "sample_percent": report.sample_percent, "bytes_read": report.bytes_read,
                  "seconds": round(report.seconds, 3)})


def in_sample(key: str, percent: float, day: int) -> bool:
    """Whether ``key`` is in today's ``percent`` sample (the window moves by ``percent`` a day)."""
    if percent >= 100:
        return True
    position = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 10_000 / 100  # 0..99.99
    start = (day * percent) % 100
    return (position - start) % 100 < percent


def run_audit(repo: Repository, *, shard: str | None = None, store: str | None = None,
              level: str = "quick", sample: float = 100.0, heads: bool = False,
              clock: Callable[[], datetime] = utc_now) -> AuditReport:
    """Audit ``shard`` (or every shard) in ``store`` (or every store) at ``level``; with
    ``heads``, HEAD every part copy for the provider's checksum (module docstring)."""
    config = repo.config
    if level not in LEVELS:
        raise UsageError(f"--level: unknown audit level '{level}' (expected {', '.join(LEVELS)})")
    if not 0 < sample <= 100:
        raise UsageError(f"--sample: {sample:g} is not a percentage in (0, 100]")
    if shard is not None:
        config.shard(shard)
    if store is not None and store not in config.stores:
        known = ", ".join(sorted(config.stores))
        raise UsageError(f"--store: unknown store '{store}' (configured stores: {known})")
    shards = [shard] if shard else sorted(config.shards)
    names = [store] if store else list(config.stores)
    stores = repo.stores(names)
    now = clock()
    report = AuditReport(level, now, shards, names, sample_percent=sample if level == "deep" else 100.0)
    started = time.monotonic()
    for shard_id in shards:
        _ShardAudit(config, shard_id, [s for s in stores if s.name in config.shard_stores(shard_id)],
                    report, now).run(deep=level == "deep", sample=sample, heads=heads)
    report.seconds = time.monotonic() - started
    return report


class _ShardAudit:
    def __init__(self, config: Config, shard: str, stores: list[Store], report: AuditReport, now: datetime):
        self.config = config
        self.shard = shard
        self.stores = stores
        self.report = report
        self.now = now
        self.catalog = Catalog(stores, every_copy=True)  # a damaged copy in one store is a finding
        self.listings: dict[str, dict[str, ObjectInfo]] = {}
        encryption = config.encryption
        self.keys = KeyRing(stores, lambda: identities_of(encryption)) \
            if encryption.private_key_file or encryption.private_key_env else None
        self.unopenable: set[str] = set()

    def find(self, check: str, message: str, **where: str | None) -> None:
        self.report.findings.append(Finding(check, message, shard=self.shard, **where))

    def run(self, *, deep: bool, sample: float, heads: bool) -> None:
        manifests, found_in = self.read_manifests()
        self.report.backups += len(manifests)
        if manifests:
            newest = max(manifests.values(), key=lambda m: (m.snapshot_at, m.id))
            self.report.newest[self.shard] = (newest.id, sorted(found_in[newest.id]))
        for manifest in manifests.values():
            self.check_parts(manifest, found_in[manifest.id])
            self.check_key_objects(manifest, found_in[manifest.id], read=deep)
            self.check_etags(manifest)
            self.check_provider_checksums(manifest, heads=heads)
        self.check_orphans(set(manifests))
        self.check_chain_and_rpo(list(manifests.values()))
        if deep:
            self.read_parts(list(manifests.values()), sample)
        self.check_binlogs(list(manifests.values()), deep=deep, sample=sample)

    # ------------------------------------------------------------------ the binlog archive
    def check_binlogs(self, manifests: list[Manifest], *, deep: bool, sample: float) -> None:
        archive = BinlogArchive(self.stores, self.shard).load()
        if not archive.records and not self.config.archives_binlogs(self.shard):
            return
        oldest = min((m for m in manifests if m.coordinates.binlog_file and m.coordinates.binlog_pos),
                     key=lambda m: m.snapshot_at, default=None)
        since = None
        if oldest is not None and archive.records:
            try:  # in the archive's binlog (another server's: matched by GTID)
                since = archive.start_of(oldest.coordinates, what=f"backup {oldest.id}")
            except NoBackupFound as exc:
                self.find("binlog-gap", exc.message, hint="a new full backup makes restores after it independent of "
                          "the gap")
        for gap in archive.gaps(since=since):
            self.find("binlog-gap", f"the binlog archive has no binlog from {gap.describe()}: transactions there "
                      "cannot be replayed (a binlog purged by the server before it was archived, or a segment "
                      "lost from every store)",
                      hint="point-in-time restores into or across it are refused; a new full backup makes "
                           "restores after it independent of the gap")
        if self.config.archives_binlogs(self.shard):
            until = archive.archived_until
            max_lag = self.config.binlogs.max_lag
            if until is None:
                self.find("binlog-lag", "the binlog archive holds nothing yet (is the shard's archiver running?)",
                          hint=f"backupd binlogs --shard {self.shard}, or [binlogs] enabled under backupd run")
            elif (self.now - until).total_seconds() > max_lag:
                self.find("binlog-lag", f"the binlog archive reaches {until.isoformat()}, "
                          f"{format_duration((self.now - until).total_seconds())} ago: older than max_lag "
                          f"{format_duration(max_lag)} (is the shard's archiver running?)")
        for record in archive.records:
            for store in self.stores:
                objects = archive.objects.get(store.name)
                if objects is None:
                    continue  # the store could not be listed: reported already
                self.report.parts_checked += 1
                if record.object_key not in objects:
                    self.find("binlog-segment-missing", f"binlog segment {record.object_key} is not in store "
                              f"{store.name}", store=store.name, part=record.object_key,
                              hint="the shard's archiver copies segments a store missed while it runs")
                elif record.key_run and record.key_run not in archive.key_runs.get(store.name, set()):
                    self.find("key-object-missing", f"binlog segment {record.object_key} in store {store.name} "
                              f"cannot be decrypted: the key object of its run {record.key_run} is not there",
                              store=store.name, part=record.object_key,
                              hint="copy binlogs/<shard>/keys/<run>.json from a store that has it")
        if deep:
            self.read_segments(archive, sample)

    def read_segments(self, archive: BinlogArchive, sample: float) -> None:
        day = int(self.now.timestamp() // 86400)
        todo = [(record, store) for record in archive.records for store in self.stores
                if record.object_key in archive.objects.get(store.name, set())
                and in_sample(f"{store.name}:{record.object_key}", sample, day)]
        for (record, store), data in prefetched(todo, lambda job: _download(job[1], job[0].object_key)):
            problem = self.check_segment(data, record)
            if problem:
                self.find("binlog-segment-corrupt", f"binlog segment {record.object_key} in store {store.name}: "
                          f"{problem}", store=store.name, part=record.object_key,
                          hint="restores read it from another store; the archive needs a good copy")

    def check_segment(self, data: bytes | StoreError, record: SegmentRecord) -> str | None:
        if isinstance(data, StoreError):
            return f"cannot be read: {data}"
        self.report.bytes_read += len(data)
        part = record.as_part(1)
        problem = check_part(data, part)
        if problem is not None:
            return problem
        if record.encryption is not None:
            opened = self.decrypted(part, data, lambda keys: keys.segment_opener([record]),
                                    f"binlog run {record.key_run}")
            if not isinstance(opened, bytes):
                return opened
            data = opened
        try:
            raw = zstandard.ZstdDecompressor().decompress(data)
            events = sum(1 for _ in read_events(raw))
        except (zstandard.ZstdError, BinlogFormatError) as exc:
            return f"does not decode: {exc}"
        if len(raw) != record.raw_size:
            return f"{len(raw)} bytes decoded, the record says {record.raw_size}"
        return None if events else "holds no event"

    def decrypted(self, part: PartRecord, data: bytes, make: Callable[[KeyRing], Opener | None], what: str,
                  **where: str | None) -> bytes | str | None:
        """An encrypted copy's zstd frame; or what is wrong with it (str); or None when no key
        opens it (its content goes unchecked, counted)."""
        opener = self.opener(make, what, **where)
        if opener is None:
            return None
        try:
            return opener(part, data)
        except CorruptPart as exc:
            return exc.message

    def opener(self, make: Callable[[KeyRing], Opener | None], what: str, **where: str | None) -> Opener | None:
        """How the deep audit opens encrypted content (None: no key configured, or it cannot
        open ``what``, a ``key-unavailable`` finding once)."""
        if self.keys is None:
            self.report.content_unchecked += 1
            return None
        try:
            return make(self.keys)
        except (KeyUnavailable, CatalogError) as exc:
            self.report.content_unchecked += 1
            if what not in self.unopenable:
                self.unopenable.add(what)
                self.find("key-unavailable", f"{what}: {exc.message}", **where,
                          hint="a restore with this configuration's private key would fail: check "
                               "[encryption] private_key_file, or backupd keys rewrap")
            return None

    def read_manifests(self) -> tuple[dict[str, Manifest], dict[str, set[str]]]:
        """Every store's listing and copy of every manifest, through the catalog; ``found_in``
        holds the stores with a copy, good or not (a bad copy is a mismatch, not a lack)."""
        entries = self.catalog.entries(self.shard)
        self.catalog.require_a_listing()  # no store at all: the audit could not run (exit 1), not a finding
        self.listings = self.catalog.listings
        for bad in self.catalog.unreadable:
            if bad.listing:
                self.find("store-unreachable", f"store {bad.store} cannot be listed: {bad.error}", store=bad.store)
        mismatched = {(store, e.manifest.id) for e in entries for store in e.bad_copies}
        for bad in self.catalog.unreadable:
            if not bad.listing:
                parsed = parse_key(bad.key)
                if parsed is None or (bad.store, parsed.backup_id) not in mismatched:
                    self.find("manifest-unreadable", bad.error, backup=parsed.backup_id if parsed else None,
                              store=bad.store)
        for entry in entries:
            if entry.copies_differ:
                self.manifest_mismatch(entry)
        manifests = {e.manifest.id: e.manifest for e in entries}
        found_in = {e.manifest.id: set(e.found_in) | set(e.bad_copies) for e in entries}
        return manifests, found_in

    def manifest_mismatch(self, entry: CatalogEntry) -> None:
        backup = entry.manifest.id
        hint = f"backupd sync --shard {self.shard} --verify replaces the bad copy with the good one"
        good = sorted(entry.copies)
        for store, error in sorted(entry.bad_copies.items()):
            self.find("manifest-mismatch", f"the manifest of backup {backup} in store {store} differs from the "
                      f"copy in {', '.join(good)} and cannot be used ({error}); the copy in {good[0]} is used",
                      backup=backup, store=store, hint=hint)
        if len(set(entry.copies.values())) > 1:
            shown = ", ".join(f"{name} {digest[:12]}..." for name, digest in sorted(entry.copies.items()))
            self.find("manifest-mismatch", f"the stores hold different manifests of backup {backup}, each passing "
                      f"its self-check ({shown})", backup=backup, store=",".join(good),
                      hint=f"backupd sync --shard {self.shard} --verify keeps the copy whose parts verify")

    def check_parts(self, manifest: Manifest, found_in: set[str]) -> None:
        for store in self.stores:
            listing = self.listings.get(store.name)
            if listing is None:
                continue  # reported as unreachable
            if store.name not in found_in:
                named = manifest.stores.get(store.name)
                why = "its manifest names it complete" if named and named.state == "complete" else \
                    "the shard backs up to it"
                self.find("store-lacks", f"backup {manifest.id} is not in store {store.name} ({why})",
                          backup=manifest.id, store=store.name,
                          hint=f"run: backupd sync --shard {self.shard}")
                continue
            for part in manifest.parts:
                self.report.parts_checked += 1
                info = listing.get(part.key)
                if info is None:
                    self.find("part-missing", f"part {part.key} of backup {manifest.id} is missing from "
                              f"store {store.name}", backup=manifest.id, store=store.name, part=part.key)
                elif info.size != part.size:
                    self.find("part-size", f"part {part.key} of backup {manifest.id} in store {store.name} "
                              f"is {info.size} bytes, the manifest says {part.size}",
                              backup=manifest.id, store=store.name, part=part.key)

    def check_key_objects(self, manifest: Manifest, found_in: set[str], *, read: bool) -> None:
        """An encrypted backup's key object beside each copy of its manifest (``read``: each
        copy read and checked)."""
        if manifest.encryption is None:
            return
        key = key_object_key(manifest.shard, manifest.id)
        for store in self.stores:
            listing = self.listings.get(store.name)
            if listing is None or store.name not in found_in:
                continue
            if key not in listing:
                self.find("key-object-missing", f"key object {key} of backup {manifest.id} is missing from store "
                          f"{store.name}: its copy there cannot be decrypted", backup=manifest.id,
                          store=store.name, part=key, hint=f"run: backupd sync --shard {self.shard}")
                continue
            if not read:
                continue
            data = _download(store, key)
            problem = f"cannot be read: {data}" if isinstance(data, StoreError) else \
                key_copy_problem(data, f"{store.name}:{key}", manifest.encryption.key_check)
            if problem:
                self.find("key-object-corrupt", f"key object {key} of backup {manifest.id} in store {store.name}: "
                          f"{problem}", backup=manifest.id, store=store.name, part=key,
                          hint=f"run: backupd sync --shard {self.shard} --verify")

    def check_etags(self, manifest: Manifest) -> None:
        """S3 and Swift list each object's MD5 as its ETag (backupd uploads every part in one
        request): copies of a part whose ETags differ cannot both be the committed bytes. Only
        for parts from before format 5, whose manifest records no MD5 to compare each with."""
        for part in manifest.parts:
            if part.md5:
                continue  # each copy is checked against the manifest's MD5 (check_provider_checksums)
            etags = {name: etag for name, listing in self.listings.items()
                     if part.key in listing and listing[part.key].size == part.size
                     and (etag := listing[part.key].etag) is not None and MD5.match(etag)}
            if len(set(etags.values())) > 1:
                shown = ", ".join(f"{name} {etag[:12]}..." for name, etag in sorted(etags.items()))
                self.find("part-etag", f"copies of part {part.key} of backup {manifest.id} differ between "
                          f"stores (ETag/MD5: {shown})", backup=manifest.id, store=",".join(sorted(etags)),
                          part=part.key, hint="run a deep audit to find the bad copy")

    def check_provider_checksums(self, manifest: Manifest, *, heads: bool) -> None:
        """Each listed copy's provider checksum against the manifest: from the listing (an MD5
        ETag), or with ``heads`` from a HEAD of every copy, which must also still be served."""
        todo = [(store, part, listed) for store in self.stores for part in manifest.parts
                if has_provider_checksum(store, part)
                and (listed := self.listings.get(store.name, {}).get(part.key)) is not None
                and listed.size == part.size]
        answers: list[ObjectInfo | StoreError] = [listed for _, _, listed in todo]
        if heads and todo:
            def head(job: tuple[Store, PartRecord, ObjectInfo]) -> ObjectInfo | StoreError:
                try:
                    return job[0].stat(job[1].key)
                except StoreError as exc:
                    return exc

            with ThreadPoolExecutor(HEAD_THREADS, thread_name_prefix="audit-head") as pool:
                answers = list(pool.map(head, todo))
            self.report.heads += len(todo)
        for (store, part, _), answer in zip(todo, answers, strict=True):
            where = {"backup": manifest.id, "store": store.name, "part": part.key}
            if isinstance(answer, ObjectNotFound):
                self.find("part-missing", f"part {part.key} of backup {manifest.id} is listed by store {store.name} "
                          "but not served (the provider lost or quarantined it)", **where)
            elif isinstance(answer, StoreError):
                self.find("part-checksum", f"part {part.key} of backup {manifest.id}: store {store.name} did not "
                          f"report its checksum: {answer}", **where)
            elif problem := provider_mismatch(store, part, answer):
                self.find("part-checksum", f"part {part.key} of backup {manifest.id} in store {store.name}: "
                          f"{problem}", **where, hint=f"backupd sync --shard {self.shard} --verify replaces it "
                                                      "from a good copy")

    def check_orphans(self, committed: set[str]) -> None:
        max_age = timedelta(seconds=self.config.audit.orphan_age)
        for store_name, listing in self.listings.items():
            stray: dict[str, int] = {}
            for key in listing:
                parsed = parse_key(key)
                if parsed is not None and parsed.kind == "part" and parsed.backup_id not in committed:
                    stray[parsed.backup_id] = stray.get(parsed.backup_id, 0) + 1
            for backup_id, count in sorted(stray.items()):
                started = parse_id_time(backup_id)
                if started is not None and self.now - started > max_age:
                    self.find("orphan", f"{count} part(s) of uncommitted backup {backup_id} in store "
                              f"{store_name}, started {format_duration((self.now - started).total_seconds())} ago",
                              backup=backup_id, store=store_name,
                              hint="the next backup of the shard deletes them (it holds the shard's lock)")

    def check_chain_and_rpo(self, manifests: list[Manifest]) -> None:
        try:
            plan_restore(manifests, self.shard, at=self.now)
        except NoBackupFound as exc:
            self.find("no-chain", f"no restorable chain: {exc}")
        schedule = self.config.schedule.for_shard(self.shard)
        if not schedule.enabled:
            return
        grace = self.config.audit.grace
        for check, what, due, candidates, every in (
                ("rpo-full", "full", "fulls are", [m for m in manifests if m.kind == "full"], schedule.full_every),
                ("rpo-backup", "backup", "a backup is", manifests, schedule.incremental_every)):
            if not candidates or every <= 0:
                continue
            newest = max(candidates, key=lambda m: m.snapshot_at)
            age = (self.now - newest.snapshot_at).total_seconds()
            if age > every + grace:
                self.find(check, f"the newest {what} ({newest.id}) is {format_duration(age)} old; "
                          f"{due} due every {format_duration(every)} (+{format_duration(grace)} grace)",
                          backup=newest.id)

    def read_parts(self, manifests: list[Manifest], sample: float) -> None:
        """Read the sampled copies one after another, the next one downloading while the current
        one is hashed and decoded (two parts in memory at most)."""
        day = int(self.now.timestamp() // 86400)
        copies = sum(p.size for m in manifests for p in m.parts) * len(self.listings)
        todo = [(manifest, store, part) for manifest in manifests for store in self.stores
                for part in manifest.parts
                if (info := self.listings.get(store.name, {}).get(part.key)) is not None and info.size == part.size
                and in_sample(f"{store.name}:{part.key}", sample, day)]  # a missing or short copy is a finding already
        with Progress(f"shard {self.shard}: deep audit", int(copies * sample / 100),
                      estimate=sample < 100) as progress:
            for (manifest, store, part), data in prefetched(todo, lambda job: _download(job[1], job[2].key)):
                problem = self.check_part(data, part, manifest)
                del data
                progress.advance(part.size)
                if problem:
                    self.find("part-corrupt", f"part {part.key} of backup {manifest.id} in store "
                              f"{store.name}: {problem}", backup=manifest.id, store=store.name, part=part.key)

    def check_part(self, data: bytes | StoreError, part: PartRecord, manifest: Manifest) -> str | None:
        """What is wrong with a downloaded copy (or why it could not be read), or None: the
        verified-read check every restore makes (size, sha256), then its zstd frame decoded
        (an encrypted one decrypted first, with a key; else its plaintext is left unchecked)."""
        if isinstance(data, StoreError):
            return f"cannot be read: {data}"
        self.report.bytes_read += len(data)
        problem = check_part(data, part)
        if problem is not None:
            return problem
        if manifest.encryption is not None:
            opened = self.decrypted(part, data, lambda keys: keys.opener(manifest), f"backup {manifest.id}",
                                    backup=manifest.id)
            if not isinstance(opened, bytes):
                return opened
            data = opened
        try:
            for _ in decode_part(data):
                pass
        except PartDecodeError as exc:
            return f"its zstd frame does not decode: {exc}"
        return None


def _download(store: Store, key: str) -> bytes | StoreError:
    """The object's bytes, or the store's error (a finding, not a reason to stop the audit)."""
    try:
        return store.get(key)
    except StoreError as exc:
        return exc
