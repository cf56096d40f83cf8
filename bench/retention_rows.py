"""The rows of bench/retention.py: the engine database filled by SQL on each backend (a
recursive CTE on SQLite, generate_series on PostgreSQL), and the counts of what the purge must
remove and of what it must leave."""

from __future__ import annotations

import sqlite3
import time

from backends import Backend

RETENTION_HOURS = 7 * 24  # the default
DAY = 24 * 3600

# What the rows are, by their number i (1..rows, in arrival order); j is the record they are a
# version of: a superseded version (one in 25) has the key of the version after it.
STREAM = "CASE WHEN j % 20 < 14 THEN 'ticketchecks' WHEN j % 20 < 17 THEN 'contacts' " \
         "ELSE 'orders' END"
STATE = "CASE WHEN i % 25 = 0 THEN 'superseded' WHEN i % 200 = 1 THEN 'dead' " \
        "ELSE 'accepted' END"
DIALECT = {
    "sqlite": {
        "series": "(WITH RECURSIVE s(i) AS (SELECT {a} UNION ALL SELECT i + {step} FROM s "
                  "WHERE i + {step} <= {b}) SELECT i FROM s)",
        # keys scattered over the unique index (not in arrival order), unique by j
        "key": "printf('%07d%08d', (j * 7919) % 1000003, j)",
        "hash": "printf('%016x%016x', (i * 2654435761) % 4294967296, i)",
        "pad": "replace(hex(zeroblob({n} / 2)), '0', 'x')",
    },
    "postgresql": {
        "series": "(SELECT i FROM generate_series({a}::bigint, {b}, {step}) AS g(i))",
        "key": "lpad(((j * 7919) % 1000003)::text, 7, '0') || lpad(j::text, 8, '0')",
        "hash": "lpad(to_hex((i * 2654435761) % 4294967296), 16, '0') || "
                "lpad(to_hex(i), 16, '0')",
        "pad": "repeat('x', {n})",
    },
}


def payload(d: dict) -> str:
    """A record's canonical text: a ticket check (about 190 bytes), a contact (850) or an order
    (1,900: an order of the reference's example compresses to about that in PostgreSQL)."""
    check = ("'{\"access_time\":\"2024-03-14 19:21:07\",\"barcode\":\"0' || k || "
             "'\",\"check_flow\":\"IN\",\"failure_reason\":\"NO_FAIL\",\"movement_id\":' || "
             "(i + 7) || ',\"result\":\"OK\",\"ticket_check_id\":' || k || '}'")
    padded = "'{{\"{what}\":\"' || k || '\",\"rest\":\"' || " + d["pad"] + " || '\"}}'"
    return (f"CASE WHEN j % 20 < 14 THEN {check} "
            f"WHEN j % 20 < 17 THEN {padded.format(what='contactNumber', n=800)} "
            f"ELSE {padded.format(what='orderId', n=1850)} END")


def statements(name: str, rows: int, t0: float, step: float, now: float) -> list[tuple]:
    """The fill, as (table, SQL) in order."""
    d = DIALECT[name]

    def series(a: int, b: int, every: int = 1) -> str:
        return d["series"].format(a=a, b=b, step=every)

    at = f"({t0!r} + i * {step!r})"
    inbox = (f"INSERT INTO inbox (id, institution, stream, record_key, content_hash, payload, "
             f"received_at, state, attempts, last_error) "
             f"SELECT i, 'bench', {STREAM}, k, {d['hash']}, {payload(d)}, {at}, {STATE}, "
             f"CASE WHEN i % 200 = 1 THEN 10 ELSE 0 END, "
             f"CASE WHEN i % 200 = 1 THEN 'POST https://crm.example/api/orders: HTTP 422' END "
             f"FROM (SELECT i, j, {d['key']} AS k FROM (SELECT i, CASE WHEN i % 25 = 0 "
             f"THEN i + 1 ELSE i END AS j FROM {series(1, rows)} AS s) AS s) AS s")
    backlog = max(1, rows // 2000)  # the newest, still to deliver
    return [
        ("inbox", inbox),
        # every version delivered to the warehouse once; a retried one failed first
        ("attempt", f"INSERT INTO attempt (inbox_id, target, at, outcome, answer) SELECT i, "
                    f"'datx', {at} + 1, 'delivered', NULL FROM {series(1, rows - backlog)} AS s "
                    "WHERE i % 200 <> 1"),
        ("attempt", f"INSERT INTO attempt (inbox_id, target, at, outcome, answer) SELECT i, "
                    f"'crm', {at} + 30, 'failed', 'HTTP 503' FROM {series(5, rows, 100)} AS s"),
        ("attempt", f"INSERT INTO attempt (inbox_id, target, at, outcome, answer) SELECT i, "
                    f"'crm', {at} + 60 * n, 'refused', 'HTTP 422' FROM {series(1, rows, 200)}"
                    f" AS s, (SELECT 1 AS n UNION ALL SELECT 2 UNION ALL SELECT 3) AS t"),
        # dead letters (one in 200), held for a paused target (one in 500), retried (one in 100)
        ("delivery", f"INSERT INTO delivery (inbox_id, target, state, attempts, last_error, "
                     f"updated_at) SELECT i, 'crm', 'dead', 10, 'HTTP 422', {at} + 600 "
                     f"FROM {series(1, rows, 200)} AS s"),
        ("delivery", f"INSERT INTO delivery (inbox_id, target, state, attempts, last_error, "
                     f"updated_at) SELECT i, 'journal', 'held', 0, NULL, {at} "
                     f"FROM {series(7, rows, 500)} AS s"),
        ("delivery", f"INSERT INTO delivery (inbox_id, target, state, attempts, last_error, "
                     f"updated_at) SELECT i, 'crm', 'done', 2, NULL, {at} + 60 "
                     f"FROM {series(5, rows, 100)} AS s"),
        # queued: one in 1,000 waiting for its next retry, and the newest not yet delivered
        ("queue", f"INSERT INTO queue (id, institution, next_attempt_at) SELECT i, 'bench', "
                  f"{now + 3600!r} FROM {series(3, rows - backlog, 1000)} AS s"),
        ("queue", f"INSERT INTO queue (id, institution, next_attempt_at) SELECT i, 'bench', 0 "
                  f"FROM {series(rows - backlog + 1, rows)} AS s"),
        # a quarantine of one in 1,000: half still held, half re-processed
        ("quarantine", f"INSERT INTO quarantine (id, institution, stream, content_hash, payload, "
                       f"reason, received_at, last_seen_at, count, state) SELECT i / 1000, "
                       f"'bench', 'orders', {d['hash']}, '{{\"orderId\":' || i || '}}', "
                       f"'orderState: required', {at}, {at}, 1, CASE WHEN i % 2000 = 0 THEN "
                       f"'held' ELSE 'reprocessed' END FROM {series(1000, rows, 1000)} AS s"),
    ]


def fill(b: Backend, rows: int, now: float) -> dict:
    span = RETENTION_HOURS * 3600 + DAY
    t0, step = now - span, span / rows
    started = time.perf_counter()
    if b.name == "sqlite":
        conn = sqlite3.connect(b.engine_url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=OFF")  # a fill, not the bridge's writes
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")
        for what, sql in statements("sqlite", rows, t0, step, now):
            print(f"  {b.name}: filling {what} ...", flush=True)
            conn.execute(sql)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.close()
    else:
        import psycopg
        url = b.engine_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET synchronous_commit = off")
            conn.execute("SET maintenance_work_mem = '512MB'")
            for what, sql in statements("postgresql", rows, t0, step, now):
                print(f"  {b.name}: filling {what} ...", flush=True)
                conn.execute(sql)
            conn.execute(f"SELECT setval('inbox_id_seq', {rows})")
            conn.execute(f"SELECT setval('quarantine_id_seq', {rows // 1000 + 1})")
            print(f"  {b.name}: vacuum and analyze ...", flush=True)
            conn.execute("VACUUM ANALYZE")
    return {"fill_s": time.perf_counter() - started}


KEPT = {  # what the purge must leave, however old; {h} is the horizon
    "dead letters": "SELECT count(*) FROM inbox WHERE state = 'dead' AND received_at < {h}",
    "held": "SELECT count(*) FROM inbox i JOIN delivery d ON d.inbox_id = i.id AND "
            "d.state = 'held' WHERE i.received_at < {h}",
    "queued": "SELECT count(*) FROM inbox i JOIN queue q ON q.id = i.id "
              "WHERE i.received_at < {h}",
    "quarantine held": "SELECT count(*) FROM quarantine WHERE state = 'held' "
                       "AND received_at < {h}",
}
PURGEABLE = ("SELECT count(*) FROM inbox i WHERE i.received_at < {h} AND i.state <> 'dead' "
             "AND NOT EXISTS (SELECT 1 FROM queue q WHERE q.id = i.id) AND NOT EXISTS "
             "(SELECT 1 FROM delivery d WHERE d.inbox_id = i.id AND d.state = 'held')")
COUNTED = ("inbox", "attempt", "delivery", "quarantine")


def counts(b: Backend, horizon: float) -> dict:
    out = {t: b.scalar("engine", f"SELECT count(*) FROM {t}") for t in COUNTED}
    for what, sql in KEPT.items():
        out[what] = b.scalar("engine", sql.format(h=repr(horizon)))
    out["purgeable"] = b.scalar("engine", PURGEABLE.format(h=repr(horizon)))
    return out
