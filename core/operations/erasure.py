"""Erasure of one contact's personal data (a GDPR request): ``forget_contact``, which the CLI
and the operator console share, runs every plugin's ``forget`` hook and records it in the audit
trail; and the built-in plugin that erases it from the engine's own stores."""

from __future__ import annotations

import logging
import time

import orjson
from sqlalchemy import delete, select

from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations import audit, reconcile_runs
from s360bridge.core.operations.audit import Actor
from s360bridge.core.plugin.hookspecs import hookimpl
from s360bridge.core.redact import redact
from s360bridge.core.storage.db import unavailable, write
from s360bridge.core.storage.tables import ATTEMPT, DELIVERY, INBOX, QUARANTINE, QUEUE

log = logging.getLogger("s360bridge.erasure")
_pause = time.sleep  # between two looks at a delivery in flight
_clock = time.monotonic
POLL_SECONDS = 0.1
PROGRESS_SECONDS = 10  # between two lines saying that the erasure still waits


def forget_contact(bridge, institution: str, contact_number: str, *,
                   actor: Actor) -> list[str]:
    """Erase the contact from every local store, through each plugin's ``forget`` hook; answer
    what went, as the hooks said it. The audit trail keeps the request: who, when, which
    contact number and what went (no personal data beyond the number); an erasure that
    stopped, with what went before it stopped and why."""
    inst = bridge.institution(institution)
    if inst is None:
        raise S360BridgeError(f"unknown institution {institution!r} (configured: "
                              f"{', '.join(sorted(bridge.settings.institutions))})")
    removed: list[str] = []
    detail: dict = {"contact": contact_number, "removed": removed}
    try:
        # the contact's versions first, before any plugin's erasure: one in flight is
        # delivered before the targets erase, and none is claimed after
        n_inbox = erase_versions(bridge, inst, _personal(bridge), contact_number)
        removed.append(f"engine inbox: {n_inbox} version(s)")
        removed += bridge.hooks.forget(bridge, inst, contact_number)
    except Exception as exc:
        why = str(exc) if isinstance(exc, S360BridgeError) else unavailable(exc)
        detail["stopped"] = redact(why)[:1000]
        try:
            _record(bridge, actor, inst, detail)
        except Exception:  # the engine database refuses writes too: the error says it
            log.warning("the stopped erasure could not be recorded in the audit trail",
                        exc_info=True)
        raise
    _record(bridge, actor, inst, detail)
    return removed


def _record(bridge, actor: Actor, inst, detail: dict) -> None:
    with write(bridge.engine) as conn:
        audit.record(conn, actor, "forget", inst.code, detail)


def erase_versions(bridge, institution, streams: list[str], key: str) -> int:
    """Delete every inbox version of ``key`` in ``streams``, with its deliveries and their
    attempts (a target's answer may quote the record), once no worker holds one of them: a
    version claimed before and pushed after the targets' own erasure would be back in them.
    Waits for such a batch up to ``engine.lease_seconds``, then raises, having erased none of
    them."""
    versions = select(INBOX.c.id).where(INBOX.c.institution == institution.code,
                                        INBOX.c.stream.in_(streams), INBOX.c.record_key == key)
    patience = bridge.settings.engine.lease_seconds
    started = _clock()
    give_up, tell_at = started + patience, started
    while True:
        with write(bridge.engine) as conn:
            ids = [seq for (seq,) in conn.execute(versions)]
            busy = _in_hand(conn, ids, time.time())
            if not busy:
                conn.execute(delete(ATTEMPT).where(ATTEMPT.c.inbox_id.in_(ids)))
                conn.execute(delete(DELIVERY).where(DELIVERY.c.inbox_id.in_(ids)))
                conn.execute(delete(QUEUE).where(QUEUE.c.id.in_(ids)))
                return conn.execute(delete(INBOX).where(INBOX.c.id.in_(ids))).rowcount
        now = _clock()
        if now >= give_up:
            raise S360BridgeError(
                f"a worker has been delivering a version of {key!r} ({institution.code}) for "
                f"{patience:g} s (engine.lease_seconds) and still holds it; the erasure "
                "stopped at that step (the audit trail says what went before it): run it "
                "again once that delivery is over")
        if now >= tell_at:  # at once, then every PROGRESS_SECONDS: a wait of minutes is seen
            log.info("waiting for a worker's delivery of %d version(s) of %r in flight, so "
                     "that none reaches a target after its erasure (%d s of at most %g: "
                     "engine.lease_seconds)", busy, key, now - started, patience)
            tell_at = now + PROGRESS_SECONDS
        _pause(POLL_SECONDS)


def _in_hand(conn, ids: list[int], now: float) -> int:
    """How many of these versions a worker holds (a live lease), or another transaction has
    locked (a claim under way, a replay). On PostgreSQL their inbox and queue rows are locked
    here, in the order the writers lock them, skipping those locked already (counted): the
    erasure never waits for a lock, so it cannot deadlock, and a claim skips the rows it holds.
    On SQLite the write transaction keeps every writer out."""
    if not ids:
        return 0
    queued = select(QUEUE.c.id, QUEUE.c.lease_owner, QUEUE.c.lease_until).where(
        QUEUE.c.id.in_(ids))
    locked = 0
    if conn.dialect.name == "postgresql":
        mine = conn.execute(select(INBOX.c.id).where(INBOX.c.id.in_(ids))
                            .with_for_update(skip_locked=True)).all()
        everyone = {seq for seq, *_ in conn.execute(queued)}
        rows = conn.execute(queued.with_for_update(skip_locked=True)).all()
        locked = len(ids) - len(mine) + len(everyone) - len(rows)
    else:
        rows = conn.execute(queued).all()
    return locked + sum(owner is not None and until is not None and until > now
                        for _, owner, until in rows)


def _personal(bridge) -> list[str]:
    """The streams whose records hold personal data."""
    return [name for name, s in bridge.hooks.streams.items() if s.personal_data]


@hookimpl
def forget(bridge, institution, contact_number):
    """Quarantined records of the streams holding personal data that name the contact, and
    the reconcile runs' differences of the contact (its inbox versions went before the hooks:
    ``forget_contact``)."""
    personal = _personal(bridge)
    with write(bridge.engine) as conn:
        found = conn.execute(select(QUARANTINE.c.id, QUARANTINE.c.payload).where(
            QUARANTINE.c.institution == institution.code, QUARANTINE.c.stream.in_(personal),
            QUARANTINE.c.payload.contains(f'"{contact_number}"', autoescape=True))).all()
        ids = [i for i, text in found if _names(text, contact_number)]
        n_quar = conn.execute(delete(QUARANTINE).where(QUARANTINE.c.id.in_(ids))).rowcount
        n_runs = reconcile_runs.forget(conn, institution.code, personal, contact_number)
    return [f"engine quarantine: {n_quar} record(s)", f"reconcile runs: {n_runs} difference(s)"]


def _names(text: str, contact_number: str) -> bool:
    """Whether a quarantined record (its text as received, spaced as it came) is the
    contact's; one that does not parse is taken to be, since it holds the number."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return True
    return not isinstance(record, dict) or record.get("contactNumber") == contact_number
