"""The fault suite's shared invariant, with exact counts printed per test.

A test tells its ``Ledger`` what it sent and what the receiver answered (or what ``ingest``
returned); ``settle`` then waits until nothing is pending, reads the engine's ``inbox_state``
and what each target holds, prints one line of figures (``pytest -s`` and CI logs show it) and
asserts the invariant of docs/guarantees.md:

* sent = accepted + duplicates + quarantined + before_cutoff, over the requests answered 200;
* every accepted version is in the inbox (exactly as many versions as accepted, unless a
  request was cut off mid-flight: then it may have committed without its answer arriving);
* every version is delivered exactly once to each target it is routed to, or superseded by a
  newer version of its key that is, or is one of the dead letters the test expects.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import create_engine, select

from s360bridge.core.storage.tables import STATES


@dataclass
class Delivered:
    """What one target holds: pushes per version ``(key, seq)`` (``by="version"``) or per key
    (``by="key"``: a versioned upsert keeps one row per key)."""

    name: str
    pushes: Counter
    by: str = "version"


def journal(path: Path, stream: str, name: str = "journal") -> Delivered:
    """The jsonl target's lines of ``stream``, counted per version (its idempotency key)."""
    lines = path.read_text("utf-8").split("\n")[:-1] if path.exists() else []
    found = (json.loads(line) for line in lines)
    return Delivered(name, Counter((str(x["key"]), x["seq"]) for x in found
                                   if x["stream"] == stream))


def sqlite_rows(path: Path, table: str, key_column: str, name: str = "datx") -> Delivered:
    """A SQLite warehouse table's rows per key (none before the first delivery creates it)."""
    if not path.exists():
        return Delivered(name, Counter(), "key")
    with sqlite3.connect(path) as conn:
        try:
            keys = [str(k) for (k,) in conn.execute(f"SELECT {key_column} FROM {table}")]
        except sqlite3.OperationalError:
            keys = []
    return Delivered(name, Counter(keys), "key")


def crm(reference_crm, stream: str, name: str = "crm") -> Delivered:
    """The reference CRM's stored pushes of ``stream`` per key (it drops a repeated
    idempotency key, which it counts in ``repeated``)."""
    return Delivered(name, Counter({str(k): n for (s, k), n in reference_crm.pushes().items()
                                    if s == stream}), "key")


def engine_url(config: Path) -> str:
    return yaml.safe_load(config.read_text("utf-8"))["engine"]["database_url"]


@dataclass
class Ledger:
    """What a test sent, and the receiver's answers, added up (thread-safe)."""

    sent: int = 0  # records in requests answered 200
    accepted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    before_cutoff: int = 0
    refused: Counter = field(default_factory=Counter)  # records per status other than 200
    unanswered: int = 0  # records in requests cut off before an answer (connection lost)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def answer(self, n: int, response) -> None:
        """A request of ``n`` records and its answer: a requests or Flask test response, or
        None when the connection was lost before the answer."""
        with self._lock:
            if response is None:
                self.unanswered += n
            elif response.status_code != 200:
                self.refused[response.status_code] += n
            else:
                body = response.json() if callable(response.json) else response.json
                self._add(n, body)

    def ingested(self, n: int, result) -> None:
        """``n`` records given to ``ingest`` directly, and its IngestResult."""
        with self._lock:
            self._add(n, result.as_dict())

    def _add(self, n: int, counts: dict) -> None:
        self.sent += n
        for k in ("accepted", "duplicates", "quarantined", "before_cutoff"):
            setattr(self, k, getattr(self, k) + counts[k])

    def states(self, url: str, stream: str, institution: str = "testvenue") -> list[tuple]:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(
                    select(STATES.c.id, STATES.c.record_key, STATES.c.state).where(
                        STATES.c.institution == institution, STATES.c.stream == stream)
                    .order_by(STATES.c.id))]
        finally:
            engine.dispose()

    def settle(self, url: str, stream: str, targets, *, dead: int = 0, exact: bool = True,
               timeout: float = 60, institution: str = "testvenue") -> dict:
        """Wait until nothing of ``stream`` is pending, then print the figures and assert the
        invariant. ``targets`` is a callable answering the ``Delivered`` of each target the
        stream is routed to (read again while waiting); answers the figures."""
        deadline = time.monotonic() + timeout
        while True:
            versions = self.states(url, stream, institution)
            delivered = targets()
            by_state = Counter(s for _, _, s in versions)
            if by_state["pending"] == 0 and all(_complete(versions, t) for t in delivered):
                break
            if time.monotonic() > deadline:
                break  # the assertions below say what is missing
            time.sleep(0.1)
        figures = {"sent": self.sent, "accepted": self.accepted,
                   "duplicates": self.duplicates, "quarantined": self.quarantined,
                   "before_cutoff": self.before_cutoff, "refused": dict(self.refused),
                   "unanswered": self.unanswered, "versions": len(versions),
                   **{s: by_state[s] for s in ("pending", "done", "superseded", "dead")}}
        for t in delivered:
            figures[f"delivered[{t.name}]"] = len(t.pushes)
            figures[f"duplicates_at[{t.name}]"] = sum(n - 1 for n in t.pushes.values())
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
        print(f"\nledger {test}: " + " ".join(f"{k}={v}" for k, v in figures.items()))

        assert self.sent == (self.accepted + self.duplicates + self.quarantined
                             + self.before_cutoff), figures
        if exact:
            assert len(versions) == self.accepted, figures
        else:  # a request cut off mid-flight may have committed without its answer
            assert self.accepted <= len(versions) <= self.accepted + self.unanswered, figures
        assert by_state["pending"] == 0, figures
        assert by_state["dead"] == dead, figures
        assert set(by_state) <= {"done", "superseded", "dead"}, figures
        for t in delivered:
            assert figures[f"duplicates_at[{t.name}]"] == 0, (t.name, figures)
            missing = _missing(versions, t)
            assert not missing, f"{t.name} lacks {len(missing)} version(s), e.g. {missing[:3]}"
        return figures


def _newest_done(versions: list[tuple]) -> dict[str, int]:
    newest: dict[str, int] = {}
    for seq, key, state in versions:
        if state == "done":
            newest[key] = max(newest.get(key, 0), seq)
    return newest


def _missing(versions: list[tuple], target: Delivered) -> list:
    """The versions neither delivered exactly once nor superseded by a newer one that is."""
    newest, missing = _newest_done(versions), []
    for seq, key, state in versions:
        if state == "dead":
            continue
        if state == "superseded":
            if newest.get(key, 0) < seq:
                missing.append((key, seq, "superseded by nothing delivered"))
            continue
        found = target.pushes[(key, seq)] if target.by == "version" else target.pushes[key]
        if found != 1:
            missing.append((key, seq, f"delivered {found} times"))
    return missing


def _complete(versions: list[tuple], target: Delivered) -> bool:
    return not _missing(versions, target)
