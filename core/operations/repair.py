"""What ``reconcile --repair`` does with the differences it found.

* A record the target lacks and the inbox holds is delivered again from the inbox (to that
  target only).
* A record the inbox lacks (never received, or purged), and a record that differs, is read
  again from S-360 (through the API inside the call budget, or from the export's own row for
  flat streams) and goes through the webhook path; when that version is the one the inbox
  already has, the target's row is removed and the version delivered again.
* A record only the target has, or that S-360 no longer gives, needs a human: it is listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import func, select

from s360bridge.core.operations.reconcile import (
    DIFFERENT,
    MISSING_IN_S360,
    MISSING_IN_TARGET,
    Reconciliation,
)
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage.db import write
from s360bridge.core.storage.tables import DELIVERY, INBOX, dialect_insert, enqueue


@dataclass
class RepairReport:
    redelivered: int = 0
    refetched: int = 0
    for_a_human: list[tuple[str, str]] = field(default_factory=list)  # (key, why)


def _in_inbox(bridge, inst, stream, keys: list[str]) -> dict[str, int]:
    """The newest inbox version of each key that has one."""
    found: dict[str, int] = {}
    with bridge.engine.connect() as conn:
        for i in range(0, len(keys), 500):
            found |= dict(conn.execute(
                select(INBOX.c.record_key, func.max(INBOX.c.id)).where(
                    INBOX.c.institution == inst.code, INBOX.c.stream == stream.name,
                    INBOX.c.record_key.in_(keys[i:i + 500]))
                .group_by(INBOX.c.record_key)).all())
    return found


def requeue(bridge, inst, stream, target: str, seqs: list[int]) -> None:
    """Deliver these inbox versions again, to ``target`` only: the stream's other targets are
    marked done for them."""
    others = [t for t in inst.streams[stream.name].targets if t != target]
    with write(bridge.engine) as conn:
        for i in range(0, len(seqs), 500):
            chunk = seqs[i:i + 500]
            rows = [{"inbox_id": s, "target": t, "state": "done", "attempts": 0,
                     "last_error": None, "updated_at": 0.0} for s in chunk for t in others]
            rows += [{"inbox_id": s, "target": target, "state": "failed", "attempts": 0,
                      "last_error": "re-delivered by reconcile --repair", "updated_at": 0.0}
                     for s in chunk]
            ins = dialect_insert(conn, DELIVERY)
            conn.execute(ins.on_conflict_do_update(
                index_elements=[DELIVERY.c.inbox_id, DELIVERY.c.target],
                set_={"state": ins.excluded.state, "last_error": ins.excluded.last_error}), rows)
            enqueue(conn, chunk)


def repair(bridge, inst, stream, target: str, spec: Reconciliation,
           statuses: dict[str, str], export_rows, progress=lambda n: None) -> RepairReport:
    """Resolve what can be resolved of ``statuses`` (key -> reconcile status)."""
    report = RepairReport()
    only_target = sorted(k for k, s in statuses.items() if s == MISSING_IN_S360)
    report.for_a_human += [(k, "only in the target: S-360's export does not have it")
                           for k in only_target]
    progress(len(only_target))
    lacking = sorted(k for k, s in statuses.items() if s == MISSING_IN_TARGET)
    different = sorted(k for k, s in statuses.items() if s == DIFFERENT)
    held = _in_inbox(bridge, inst, stream, lacking)
    again = {k: held[k] for k in lacking if k in held}
    progress(len(again))
    to_fetch = [k for k in lacking if k not in held] + different
    rewrite = []  # differing keys whose S-360 version the target already had: rewrite them
    for i in range(0, len(to_fetch), 50):
        chunk = to_fetch[i:i + 50]
        if spec.fetch is None:
            report.for_a_human += [(k, "no way to read it again from S-360") for k in chunk]
            progress(len(chunk))
            continue
        for key, record in spec.fetch(chunk, export_rows).items():
            if record is None:
                report.for_a_human.append((key, "S-360 did not give it"))
                continue
            result = ingest(bridge, inst, stream, [record])
            if result.accepted:
                report.refetched += 1
            elif result.duplicates:
                newest = _in_inbox(bridge, inst, stream, [key])
                again[key] = newest[key]
                rewrite.append(key)
            else:
                why = "older than the history cut-off" if result.before_cutoff else \
                    "S-360's record does not pass validation (see the quarantine)"
                report.for_a_human.append((key, why))
        progress(len(chunk))
    if rewrite and spec.drop is not None:
        spec.drop(rewrite)
    requeue(bridge, inst, stream, target, sorted(again.values()))
    report.redelivered = len(again)
    return report


def deliver(bridge) -> int:
    """Run a worker here until nothing is due; answer how many records it handled."""
    worker, total = Worker(bridge), 0
    while n := worker.run_once():
        total += n
    return total
