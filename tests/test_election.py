"""One scheduler among many processes (core/pipeline/election.py), on SQLite and PostgreSQL:
real `s360bridge worker` processes on one engine database elect one to run the periodic jobs,
`kill -9` of it hands them to another, `--no-scheduler` never runs them. Each process counts its
metrics in a folder of its own, so a job that ran in it leaves its success there."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from s360bridge.core.cli.main import cli
from s360bridge.core.config import load_settings
from s360bridge.core.operator.gauges import DatabaseGauges
from s360bridge.core.pipeline.election import OTHER_INSTITUTIONS, Election, Unelected, lock_for
from s360bridge.core.pipeline.processes import run_scheduler
from s360bridge.core.plugin.hookspecs import hookimpl

from .conftest import base_config, bridge_of, write_config
from .helpers.election import Worker
from .helpers.plugins import registered
from .helpers.postgres import schemas
from .helpers.processes import stop, wait_until

RETRY = 0.2  # engine.scheduler_retry_seconds of these tests


@pytest.fixture(params=["sqlite", "postgresql"])
def config(request, tmp_path, secrets_env):
    """The test configuration, retrying every RETRY seconds, its engine database upgraded."""
    cfg = base_config(tmp_path)
    cfg["engine"]["scheduler_retry_seconds"] = RETRY
    if request.param == "sqlite":
        yield _upgraded(tmp_path, cfg)
        return
    with schemas() as made:
        cfg["engine"]["database_url"] = made.new("engine")
        yield _upgraded(tmp_path, cfg)


def _upgraded(tmp_path: Path, cfg: dict) -> Path:
    path = write_config(tmp_path, cfg)
    bridge_of(path).close()
    return path


def scheduler_line(runner, config: Path) -> str:
    out = runner.invoke(cli, ["status", "-c", str(config)])
    assert out.exit_code == 0, out.output
    return out.output.splitlines()[-1]


def test_one_worker_runs_the_jobs_and_another_takes_over_when_it_is_killed(config, runner):
    a, b = Worker(config, "a"), Worker(config, "b")
    never = Worker(config, "never", "--no-scheduler")
    wait_until(lambda: a.said("standing by") + b.said("standing by") == 1
               and a.ran_purge() + b.ran_purge() == 1, 60, "one scheduler, one standing by")
    leader, standby = (a, b) if a.ran_purge() else (b, a)
    assert leader.said("this process is the scheduler") == 1
    assert standby.said(" is the scheduler; trying again every 0.2s") == 1
    wait_until(lambda: never.said("worker started"), 60, "the worker without a scheduler")
    assert scheduler_line(runner, config).startswith(
        f"scheduler: {socket.gethostname()} pid {leader.proc.pid}")

    os.kill(leader.proc.pid, signal.SIGKILL)
    killed = time.monotonic()
    assert leader.proc.wait(30) == -signal.SIGKILL
    wait_until(standby.ran_purge, 30, "the other worker to run the jobs", standby.proc)
    print(f"taken over {time.monotonic() - killed:.2f} s after the kill (retry every {RETRY} s)")
    assert standby.said("this process is the scheduler") == 1
    assert standby.said("standing by") == 1  # said once, however many times it tried
    assert scheduler_line(runner, config).startswith(
        f"scheduler: {socket.gethostname()} pid {standby.proc.pid}")

    assert not never.ran_purge() and not never.said("scheduler")
    assert [stop(w.proc) for w in (standby, never)] == [0, 0]
    assert scheduler_line(runner, config).startswith("scheduler: none: no process runs")


def take_away(bridge, election: Election) -> None:
    """The lock of ``election`` lost: its session ended by the server (PostgreSQL), its file
    removed (SQLite)."""
    if bridge.engine.dialect.name == "postgresql":
        with bridge.engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_terminate_backend(%(pid)s)",
                                 {"pid": election.lock._conn.info.backend_pid})
    else:
        election.lock.path.unlink()


def test_a_lost_lock_stops_the_jobs_until_taken_again(config, caplog):
    """The scheduler's lock taken from it (PostgreSQL: its session ended by the server; SQLite:
    its file removed): the next check says so, and another process that took it meanwhile
    keeps it."""
    bridge = bridge_of(config)
    first, second = Election(lock_for(bridge), 0), Election(lock_for(bridge), 0)
    try:
        assert first.leads() and not second.leads() and not second.leads()
        take_away(bridge, first)
        wait_until(second.leads, 30, "the lock to be free")
        with caplog.at_level(logging.INFO, "s360bridge.scheduler"):
            assert not first.leads() and not first.leads()
        said = [r.getMessage() for r in caplog.records]
        assert said[0].startswith("lost the scheduler's ") and len(said) == 2, said
        assert said[1].startswith(f"standing by: {socket.gethostname()} pid {os.getpid()}")
    finally:
        first.release(), second.release()
        bridge.close()


class Scheduler:
    """``run_scheduler`` in a thread of this process, with ``election``."""

    def __init__(self, bridge, election: Election):
        self.election, self.stop = election, threading.Event()
        self.thread = threading.Thread(target=run_scheduler, args=(bridge, self.stop, election))
        self.thread.start()

    def elected(self) -> bool:
        return self.thread.is_alive() and self.election.leading

    def end(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def said(caplog, text: str) -> int:
    return sum(text in r.getMessage() for r in caplog.records)


def test_a_busy_pool_while_standing_by_does_not_end_the_scheduler(tmp_path, secrets_env,
                                                                  caplog):
    """PostgreSQL: who holds the lock is read through the pool, and every pooled connection
    busy (SQLAlchemy's pool timeout) is no reason to stop standing for election."""
    cfg = base_config(tmp_path)
    cfg["engine"].update(scheduler_retry_seconds=RETRY, pool_size=1, pool_max_overflow=0,
                         pool_timeout_seconds=0.1)
    with schemas() as made:
        cfg["engine"]["database_url"] = made.new("engine")
        bridge = bridge_of(write_config(tmp_path, cfg))
        other = Election(lock_for(bridge), 0)
        scheduler = None
        try:
            assert other.leads()
            with bridge.engine.connect() as busy, caplog.at_level(logging.INFO):
                busy.exec_driver_sql("SELECT 1")
                scheduler = Scheduler(bridge, Election(lock_for(bridge), RETRY))
                wait_until(lambda: said(caplog, "standing by: another process is the "), 30,
                           "the scheduler to stand by")
            other.release()
            wait_until(scheduler.elected, 30, "the scheduler to be elected")
        finally:
            other.release()
            if scheduler is not None:
                scheduler.end()
            bridge.close()


class FailingTwice:
    """A lock whose first two tries fail as a bug would."""

    def __init__(self, lock):
        self.lock, self.failures = lock, 2

    def __getattr__(self, name: str):
        return getattr(self.lock, name)

    def acquire(self) -> bool:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("a bug in the election")
        return self.lock.acquire()


def test_a_failing_round_of_the_election_is_said_once_and_tried_again(config, caplog):
    bridge = bridge_of(config)
    lock = FailingTwice(lock_for(bridge))
    try:
        with caplog.at_level(logging.INFO):
            scheduler = Scheduler(bridge, Election(lock, RETRY))
            wait_until(scheduler.elected, 30, "the scheduler to be elected")
            scheduler.end()
        assert lock.failures == 0
        assert said(caplog, "the scheduler failed, lets its lock go and tries again every 0.2s: "
                            "RuntimeError: a bug in the election") == 1
    finally:
        lock.release()
        bridge.close()


def elected(bridge) -> float:
    """The gauge s360bridge_scheduler_elected, as /metrics reads it with ``bridge``."""
    return next(s.value for family in DatabaseGauges(bridge).collect() for s in family.samples
                if s.name == "s360bridge_scheduler_elected")


class Jobs:
    """A plugin's jobs, counting their runs: ``tick`` every 0.01 s, ``hourly`` every hour."""

    def __init__(self):
        self.runs = {"tick": 0, "hourly": 0}

    @hookimpl
    def register_jobs(self, register, bridge):
        for name, every in (("tick", 0.01), ("hourly", 3600)):
            register(name, every, lambda name=name: self.runs.update({name: self.runs[name] + 1}))


def test_no_job_starts_once_the_lock_is_lost(config):
    """Before each job the scheduler checks that it holds the lock: here it would check it
    only once an hour otherwise, and the tick would go on running beside another scheduler."""
    bridge, jobs = bridge_of(config), Jobs()
    other = Election(lock_for(bridge), 0)
    with registered(jobs, "jobs"):
        scheduler = Scheduler(bridge, Election(lock_for(bridge), 3600))
        try:
            wait_until(lambda: jobs.runs["tick"] >= 3, 30, "the tick to run")
            take_away(bridge, scheduler.election)
            wait_until(other.leads, 30, "another process to take the lock")
            wait_until(lambda: not scheduler.election.leading, 30, "the loss to be seen")
            ran = jobs.runs["tick"]
        finally:
            scheduler.end()
            other.release()
            bridge.close()
    assert jobs.runs["tick"] == ran and jobs.runs["hourly"] == 1


def test_elected_again_a_process_runs_only_the_jobs_that_are_due(config):
    """Not every job at once: the lock lost and taken again, the hourly job waits its hour."""
    bridge, jobs = bridge_of(config), Jobs()
    other = Election(lock_for(bridge), 0)
    with registered(jobs, "jobs"):
        scheduler = Scheduler(bridge, Election(lock_for(bridge), RETRY))
        try:
            wait_until(lambda: jobs.runs["tick"] >= 3, 30, "the tick to run")
            take_away(bridge, scheduler.election)
            wait_until(other.leads, 30, "another process to take the lock")
            wait_until(lambda: not scheduler.election.leading, 30, "the loss to be seen")
            other.release()
            ran = jobs.runs["tick"]
            wait_until(lambda: scheduler.elected() and jobs.runs["tick"] > ran, 30,
                       "the scheduler to be elected again and run the tick")
        finally:
            scheduler.end()
            other.release()
            bridge.close()
    assert jobs.runs["hourly"] == 1


def test_metrics_say_whether_a_process_is_the_scheduler(config):
    bridge = bridge_of(config)
    scheduler = Election(lock_for(bridge), 0)
    try:
        assert elected(bridge) == 0
        assert scheduler.leads()
        assert elected(bridge) == 1
        scheduler.release()
        assert elected(bridge) == 0
    finally:
        scheduler.release()
        bridge.close()


def test_one_scheduler_per_engine_database_whatever_the_institutions(config, runner, caplog):
    """A process configured with every institution and one with a part of them elect one
    scheduler between them (else both would run the part's jobs); `status` and the gauge of
    either configuration see it, and the one with other institutions than the scheduler's
    says so."""
    everything = config.parent / "everything"
    everything.mkdir()
    cfg = yaml.safe_load(config.read_text())
    write_config(everything, cfg)
    write_config(everything, {**cfg, "institution": "othervenue"}, "othervenue.yaml")
    whole, part = bridge_of(everything), bridge_of(config)
    scheduler, standby = Election(lock_for(whole), 0), Election(lock_for(part), 0)
    try:
        with caplog.at_level(logging.INFO, "s360bridge.scheduler"):
            assert scheduler.leads() and not standby.leads()
        assert said(caplog, OTHER_INSTITUTIONS) == 1
        assert elected(whole) == elected(part) == 1
        me = f"scheduler: {socket.gethostname()} pid {os.getpid()}"
        assert scheduler_line(runner, everything).startswith(me)
        assert OTHER_INSTITUTIONS not in scheduler_line(runner, everything)
        line = scheduler_line(runner, config)
        assert line.startswith(me) and line.endswith(OTHER_INSTITUTIONS), line
    finally:
        scheduler.release(), standby.release()
        whole.close(), part.close()


def test_an_unreadable_lock_file_leaves_the_scheduler_unknown(tmp_path, secrets_env, runner):
    """SQLite: a lock file that cannot be read (here a folder in its place) leaves the gauge out
    of /metrics, as on a standby, and `status` says it: neither fails."""
    path = _upgraded(tmp_path, base_config(tmp_path))
    bridge = bridge_of(path)
    try:
        lock_for(bridge).path.mkdir()
        names = {s.name: s.value for family in DatabaseGauges(bridge).collect()
                 for s in family.samples}
        assert names["s360bridge_engine_database_up"] == 1
        assert "s360bridge_backlog_records" in names
        assert "s360bridge_scheduler_elected" not in names
        assert scheduler_line(runner, path) == (
            f"scheduler: unknown: {lock_for(bridge).path} cannot be read (Is a directory)")
    finally:
        bridge.close()


def test_an_in_memory_database_has_one_process_and_no_election(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["database_url"] = "sqlite://"
    bridge = SimpleNamespace(settings=load_settings([write_config(tmp_path, cfg)]))
    lock = lock_for(bridge)
    assert isinstance(lock, Unelected) and lock.holder() is None
    assert Election(lock, 0).leads() and Election(lock, 0).leads()
    assert list(tmp_path.glob("*.lock")) == []
