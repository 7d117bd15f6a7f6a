"""Which full backup an incremental can be applied to (pure: manifests in, answers out).

An incremental ``I`` carries, for every table at its snapshot, either its rows changed since
``I.window.since`` plus the list of live primary keys ("changed" tables), or the whole table.
Applied on top of a full ``F``, it yields exactly the state at ``I``'s snapshot when:

* ``F`` is a full of the same shard taken no later than ``I`` (``F.snapshot_at <= I.snapshot_at``);
* ``I``'s window reaches back to ``F``'s snapshot (``I.window.since <= F.snapshot_at``), so every
  row changed after ``F`` is in ``I``;
* every "changed" table of ``I`` exists in ``F`` with the same definition (schema fingerprint),
  so ``I``'s rows fit ``F``'s copy of the table.

A physical incremental (pages changed after an LSN) applies only to the full it was taken
against: its ``parent_id``, whose ``to_lsn`` is its ``from_lsn``. Logical and physical backups
never mix in a chain.

Retention (what to keep) and the restore planner (what to apply) both use these rules.
"""

from __future__ import annotations

from datetime import datetime

from backupd.repo.model import Manifest


def why_not_applicable(incremental: Manifest, full: Manifest) -> str | None:
    """None when ``incremental`` applies to ``full``; otherwise why not, in a few words."""
    if full.kind != "full" or full.shard != incremental.shard:
        return f"{full.id} is not a full backup of shard {incremental.shard}"
    if incremental.physical is not None or full.physical is not None:
        return _why_not_physical(incremental, full)
    assert incremental.incremental is not None, "not an incremental"
    if full.snapshot_at > incremental.snapshot_at:
        return f"full {full.id} is newer than incremental {incremental.id}"
    window = incremental.incremental.window
    if window.since > full.snapshot_at:
        return (f"the window of {incremental.id} starts at {_iso(window.since)}, after the "
                f"snapshot of full {full.id} ({_iso(full.snapshot_at)})")
    schemas = {(t.database, t.table): t.schema_digest for t in full.reference.tables}
    own = {(t.database, t.table): t.schema_digest for t in incremental.reference.tables}
    for change in incremental.incremental.tables:
        if change.mode != "changed":
            continue
        key = (change.database, change.table)
        if key not in schemas:
            return f"table {change.name} is not in full {full.id}"
        if schemas[key] is None or schemas[key] != own.get(key):
            return f"table {change.name} has a different definition in full {full.id}"
    return None


def _why_not_physical(incremental: Manifest, full: Manifest) -> str | None:
    """A physical incremental holds the pages changed after its base full's ``to_lsn``: it
    applies to that one full (its ``parent_id``) and to nothing else."""
    if incremental.physical is None or full.physical is None:
        return f"{incremental.id} and {full.id} are not both physical (or both logical) backups"
    if incremental.parent_id != full.id:
        return f"physical incremental {incremental.id} applies only to its base full {incremental.parent_id}"
    if incremental.physical.from_lsn != full.physical.to_lsn:
        return (f"physical incremental {incremental.id} starts at LSN {incremental.physical.from_lsn}, "
                f"full {full.id} ends at {full.physical.to_lsn}")
    return None


def applies_to(incremental: Manifest, full: Manifest) -> bool:
    return why_not_applicable(incremental, full) is None


def base_for(incremental: Manifest, fulls: list[Manifest]) -> Manifest | None:
    """The newest of ``fulls`` that ``incremental`` applies to, or None."""
    usable = [f for f in fulls if applies_to(incremental, f)]
    return max(usable, key=lambda f: (f.snapshot_at, f.id)) if usable else None


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
