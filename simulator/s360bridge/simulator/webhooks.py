"""S-360's webhook side: a queue processed every M, at most S records a run, bs records a POST.

A payload answered anything but 200 is sent again, the same, at each following run, up to 12
tries; then it is logged as abandoned, as S-360 does (REFERENCE §a.3, §a.4).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import requests

log = logging.getLogger("s360bridge.simulator.webhooks")
MAX_TRIES = 12


@dataclass
class WebhookSettings:
    """One S-360 interface. Defaults are S-360's for contact/order webhooks (M in seconds here,
    so that a demo runs in seconds instead of 15-minute periods)."""

    url: str
    every_seconds: float = 15 * 60
    batch_size: int = 100  # S
    bucket_size: int = 1  # bs
    auth: tuple[str, ...] = ("none",)  # ("basic", user, password) or ("api_key", header, key)
    single_object: bool = False  # a bucket of one is sent as an object, as the order example
    timeout: float = 30.0


@dataclass
class Payload:
    records: list[dict]
    tries: int = 0


@dataclass
class RunReport:
    posts: int = 0
    delivered: int = 0
    failed_posts: int = 0
    abandoned: int = 0
    statuses: list[int] = field(default_factory=list)
    # what the receiver said it did with delivered records (S-360 itself ignores the body)
    answers: Counter = field(default_factory=Counter)

    def add(self, other: RunReport) -> None:
        for k in ("posts", "delivered", "failed_posts", "abandoned"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.statuses += other.statuses
        self.answers.update(other.answers)


class WebhookQueue:
    """The queue of one S-360 webhook interface."""

    def __init__(self, settings: WebhookSettings, session: requests.Session | None = None):
        self.settings = settings
        self.session = session or requests.Session()
        self.waiting: deque[dict] = deque()
        self.retrying: list[Payload] = []
        self.abandoned: list[Payload] = []
        self.total = RunReport()

    def enqueue(self, records: list[dict]) -> None:
        self.waiting.extend(records)

    @property
    def pending(self) -> int:
        return len(self.waiting) + sum(len(p.records) for p in self.retrying)

    def _headers(self) -> tuple[dict, tuple | None]:
        kind, *rest = self.settings.auth
        if kind == "basic":
            return {}, (rest[0], rest[1])
        if kind == "api_key":
            return {rest[0]: rest[1]}, None
        return {}, None

    def _post(self, payload: Payload) -> tuple[int, dict]:
        body = payload.records
        if self.settings.single_object and len(body) == 1:
            body = body[0]
        headers, auth = self._headers()
        try:
            resp = self.session.post(self.settings.url, json=body, headers=headers, auth=auth,
                                     timeout=self.settings.timeout)
        except requests.RequestException as exc:
            log.warning("POST %s failed: %s", self.settings.url, exc)
            return 0, {}
        try:
            answer = resp.json() if resp.status_code == 200 else {}
        except ValueError:
            answer = {}
        return resp.status_code, answer if isinstance(answer, dict) else {}

    def run_once(self) -> RunReport:
        """One scheduled run: earlier failed payloads first, then new records, S at most."""
        report = RunReport()
        budget = self.settings.batch_size
        payloads, kept = [], []
        for p in self.retrying:
            if len(p.records) <= budget:
                payloads.append(p)
                budget -= len(p.records)
            else:
                kept.append(p)
        while self.waiting and budget > 0:
            n = min(self.settings.bucket_size, budget, len(self.waiting))
            payloads.append(Payload([self.waiting.popleft() for _ in range(n)]))
            budget -= n
        self.retrying = kept
        for p in payloads:
            status, answer = self._post(p)
            p.tries += 1
            report.posts += 1
            report.statuses.append(status)
            if status == 200:
                report.delivered += len(p.records)
                report.answers.update({k: v for k, v in answer.items() if isinstance(v, int)})
            elif p.tries >= MAX_TRIES:
                report.failed_posts += 1
                report.abandoned += len(p.records)
                self.abandoned.append(p)
                log.error("abandoned after %d tries: %d record(s) to %s (last status %s)",
                          p.tries, len(p.records), self.settings.url, status)
            else:
                report.failed_posts += 1
                self.retrying.append(p)
        self.total.add(report)
        return report

    def run(self, stop: threading.Event, until_empty: bool = True) -> RunReport:
        """Run every M seconds until ``stop`` is set (or the queue is empty)."""
        while not stop.is_set():
            started = time.monotonic()
            self.run_once()
            if until_empty and not self.pending:
                break
            stop.wait(max(0.0, self.settings.every_seconds - (time.monotonic() - started)))
        return self.total
