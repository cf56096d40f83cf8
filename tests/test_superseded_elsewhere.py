"""A claim supersedes the older versions of its keys that are queued outside it (leased by
another worker, waiting for a retry). On PostgreSQL each queue row carries its key's hash
(engine_0014), so the claim finds them among the rows queued before it by number and reads only
those; without a hash, or with too many rows before it, it looks its keys up as SQLite does."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from s360bridge.core.pipeline import claims, supersede
from s360bridge.core.pipeline.claims import claim
from s360bridge.core.pipeline.ingest import ingest
from s360bridge.core.pipeline.worker import Worker
from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine
from s360bridge.core.storage.tables import enqueue

from .conftest import fixture
from .helpers.postgres import QUEUED_AND_WRONG_HASHES
from .helpers.processes import checks
from .helpers.records import sale_version
from .helpers.schema import plugin_locations, upgrade_to

FIRST = 80_000_000_000


@pytest.fixture
def looked_up(monkeypatch):
    """What each claim's search for other versions was given: the ids to read, or None (its
    keys looked up)."""
    calls = []
    real = supersede._queued_versions

    def spy(conn, best, ranks, claimed, ranker, listed):
        calls.append(None if listed is None else sorted(listed))
        return real(conn, best, ranks, claimed, ranker, listed)

    monkeypatch.setattr(supersede, "_queued_versions", spy)
    return calls


def leased_elsewhere_then_newer(bridge) -> tuple[claims.Claim, int]:
    """Three checks claimed by a worker (its lease running), then a newer version of the
    second arrives: the other worker's claim, and the id of the version it holds."""
    inst, stream = bridge.institution("testvenue"), bridge.stream("ticketchecks")
    ingest(bridge, inst, stream, checks(FIRST, 3))
    held = claim(bridge.engine, ["testvenue"], 10, 60)
    assert len(held) == 3
    newer = dict(checks(FIRST + 1, 1)[0], result="REFUSED")
    assert ingest(bridge, inst, stream, [newer]).accepted == 1
    return held, held.seqs[1]


def state_of(bridge, seq: int) -> tuple[str, int]:
    with bridge.engine.connect() as conn:
        return conn.execute(text("SELECT s.state, (SELECT count(*) FROM queue WHERE id = s.id) "
                                 "FROM inbox_state s WHERE s.id = :id"), {"id": seq}).one()


def results(c: claims.Claim) -> list[str]:
    return [r.record["result"] for records in c.groups.values() for r in records]


def test_a_version_leased_by_another_worker_is_superseded_by_its_newer_one(any_bridge,
                                                                         looked_up):
    held, older = leased_elsewhere_then_newer(any_bridge)
    mine = claim(any_bridge.engine, ["testvenue"], 10, 60)
    assert results(mine) == ["REFUSED"]
    assert state_of(any_bridge, older) == ("superseded", 0)
    assert [state_of(any_bridge, s) for s in held.seqs if s != older] == [("pending", 1)] * 2
    # PostgreSQL reads only the row whose key hash is the claim's; SQLite looks the keys up
    postgres = any_bridge.engine.dialect.name == "postgresql"
    assert looked_up == [[older] if postgres else None]


def test_another_workers_batch_of_other_keys_costs_no_look_up(any_bridge, looked_up):
    """The usual case of two workers: the rows leased before the claim are of other keys."""
    inst, stream = any_bridge.institution("testvenue"), any_bridge.stream("ticketchecks")
    ingest(any_bridge, inst, stream, checks(FIRST, 3))
    claim(any_bridge.engine, ["testvenue"], 10, 60)
    ingest(any_bridge, inst, stream, checks(FIRST + 3, 2))
    assert len(claim(any_bridge.engine, ["testvenue"], 10, 60)) == 2
    assert looked_up == ([] if any_bridge.engine.dialect.name == "postgresql" else [None])


@pytest.mark.parametrize("unhashed", ["others", "claimed"])
def test_rows_queued_without_a_hash_are_still_found(pg_bridge, looked_up, unhashed):
    """Rows queued before engine_0014 (or by a path that leaves the hash out): one before the
    claim is read whatever its key; one in the claim makes it look its keys up."""
    held, older = leased_elsewhere_then_newer(pg_bridge)
    with pg_bridge.engine.begin() as conn:
        conn.execute(text("UPDATE queue SET key_hash = NULL WHERE "
                          + ("lease_owner IS NOT NULL" if unhashed == "others"
                             else "lease_owner IS NULL")))
    assert results(claim(pg_bridge.engine, ["testvenue"], 10, 60)) == ["REFUSED"]
    assert state_of(pg_bridge, older) == ("superseded", 0)
    assert looked_up == [sorted(held.seqs) if unhashed == "others" else None]


def test_a_closed_order_waiting_for_its_retry_outranks_a_later_version(any_bridge, looked_up):
    """Ranked versions (orders): the queued row's payload is read to rank it, and the claim's
    later, non-final version is the one superseded."""
    inst, stream = any_bridge.institution("testvenue"), any_bridge.stream("orders")
    ranker = Worker(any_bridge)._ranker
    ingest(any_bridge, inst, stream, [order_in(1000, "CLOSED")])
    (closed,) = claim(any_bridge.engine, ["testvenue"], 10, 60, ranker=ranker).seqs
    with any_bridge.engine.begin() as conn:  # it failed: waiting for its retry
        conn.execute(text("UPDATE queue SET lease_owner = NULL, lease_until = NULL, "
                          "next_attempt_at = 1e12"))
    with any_bridge.engine.begin() as conn:  # the claim's mark of it left aside: the row decides
        conn.execute(text("DELETE FROM version_mark"))
    ingest(any_bridge, inst, stream, [order_in(500, "IN_PROGRESS")])
    assert len(claim(any_bridge.engine, ["testvenue"], 10, 60, ranker=ranker)) == 0
    assert state_of(any_bridge, closed) == ("pending", 1)
    with any_bridge.engine.connect() as conn:
        later = conn.execute(text("SELECT max(id) FROM inbox")).scalar()
    assert later != closed and state_of(any_bridge, later) == ("superseded", 0)
    assert looked_up == [[closed] if any_bridge.engine.dialect.name == "postgresql" else None]


def order_in(amount: int, state: str) -> dict:
    order = sale_version(amount)
    order["orderDetailsData"]["orderState"] = state
    return order


def test_too_many_rows_queued_before_a_claim_and_its_keys_are_looked_up(any_bridge, looked_up,
                                                                        monkeypatch):
    monkeypatch.setattr(claims, "OTHERS_READ", 1)  # at most one row before a claim of one
    _, older = leased_elsewhere_then_newer(any_bridge)
    assert results(claim(any_bridge.engine, ["testvenue"], 1, 60)) == ["REFUSED"]
    assert state_of(any_bridge, older) == ("superseded", 0)
    assert looked_up == [None]


def test_after_a_backlog_the_next_claims_only_ask_whether_anything_is_before(
        pg_bridge, looked_up, monkeypatch):
    """Rows before a claim past what it reads (a backlog waiting for its retry): the next
    claims read one and look their keys up, up to BACKLOG_CLAIMS of them, or until one finds
    nothing before it; then one reads them all again."""
    monkeypatch.setattr(claims, "OTHERS_READ", 1)
    monkeypatch.setattr(claims, "BACKLOG_CLAIMS", 5)
    read, real = [], claims.run_all

    def spy(conn, statements, **kwargs):  # how many rows before it each claim reads
        read.extend(p[-1] for sql, p in statements if sql is claims._CLAIMED)
        return real(conn, statements, **kwargs)

    monkeypatch.setattr(claims, "run_all", spy)
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    held, _ = leased_elsewhere_then_newer(pg_bridge)  # 3 leased, a newer second one queued

    def newer_then_claim(first: int) -> claims.Claim:
        ingest(pg_bridge, inst, stream, [dict(checks(first, 1)[0], result="REFUSED")])
        return claim(pg_bridge.engine, ["testvenue"], 2, 60)

    assert len(newer_then_claim(FIRST + 2)) == 2  # 3 before it, 2 read: a backlog
    assert len(newer_then_claim(FIRST)) == 1  # reads one, looks up
    assert [state_of(pg_bridge, s)[0] for s in held.seqs] == ["superseded"] * 3
    with pg_bridge.engine.begin() as conn:  # the claims completed
        conn.execute(text("DELETE FROM queue"))
    assert len(newer_then_claim(FIRST + 5)) == 1  # reads one, finds none: the backlog is gone
    assert len(newer_then_claim(FIRST + 6)) == 1  # read in full again
    assert read == [10, 2, 1, 1, 2]  # the first, the other worker's claim of 10
    assert looked_up == [None, None]


def test_every_way_into_the_queue_writes_the_keys_hash(pg_bridge):
    """Ingest of new keys (straight COPY), of a batch with a version there already (the
    staging table), and a replay's queueing (enqueue, also of rows queued already; the resume
    of a paused target shares its statement)."""
    inst, stream = pg_bridge.institution("testvenue"), pg_bridge.stream("ticketchecks")
    ingest(pg_bridge, inst, stream, checks(FIRST, 50))
    ingest(pg_bridge, inst, stream, checks(FIRST + 40, 20))  # ten there already
    person = fixture("contacts_person.json")[0]
    ingest(pg_bridge, inst, pg_bridge.stream("contacts"),  # keys that JSON and SQL escape
           [dict(person, contactNumber=n) for n in ('0042', 'é"1\\', "a'b", "{x,y}")])
    with pg_bridge.engine.begin() as conn:
        assert conn.execute(text(QUEUED_AND_WRONG_HASHES)).one() == (64, 0)
        assert conn.execute(text("SELECT count(DISTINCT key_hash) FROM queue")).scalar() == 64
        conn.execute(text("DELETE FROM queue WHERE id % 2 = 0"))
        # a hash gone stale (a restore onto another platform): a replay writes it again
        conn.execute(text("UPDATE queue SET key_hash = 0"))
        enqueue(conn, [r[0] for r in conn.execute(text("SELECT id FROM inbox"))])
        assert conn.execute(text(QUEUED_AND_WRONG_HASHES)).one() == (64, 0)


def test_the_upgrade_gives_rows_already_queued_their_hash(new_database):
    engine = make_engine(new_database())
    upgrade_to(engine, ("engine_0013",))
    with engine.begin() as conn:
        for n, key in enumerate(("k1", "k2", "ké"), 1):
            conn.execute(text(
                "INSERT INTO inbox (id, institution, stream, record_key, content_hash, payload,"
                " received_at, state, attempts) VALUES (:n, 'v', 'orders', :key, 'h', '{}', 1,"
                " 'accepted', 0)"), {"n": n, "key": key})
            conn.execute(text("INSERT INTO queue (id, institution, next_attempt_at) "
                              "VALUES (:n, 'v', 0)"), {"n": n})
    migrate.upgrade(engine, plugin_locations())
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            assert conn.execute(text(QUEUED_AND_WRONG_HASHES)).one() == (3, 0)
        else:  # SQLite keeps none: its claims look the keys up
            assert conn.execute(text("SELECT count(key_hash) FROM queue")).scalar() == 0
    engine.dispose()
