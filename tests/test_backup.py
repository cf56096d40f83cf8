"""`s360bridge db backup`: SQLite databases copied with the online backup API while a real
`s360bridge run` ingests over HTTP and delivers; each copy is whole (integrity_check), holds
whole transactions and nothing delivered without its inbox row, and a restored copy serves
again. A database on PostgreSQL gets the pg_dump command, which is run here, and restored with
the pg_restore command docs/operations.md gives."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import requests
from sqlalchemy.engine import make_url

from s360bridge.core.cli.main import cli
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.storage import backup

from .conftest import API_KEY, base_config, bridge_of, drain, fixture, post, write_config
from .helpers.postgres import PG, needs_pg
from .helpers.processes import S360BRIDGE, checks, free_port, healthy, start, stop, wait_until

BATCH = 50  # records per request: one transaction each
ROOT = Path(__file__).resolve().parent.parent
RESTORE = "pg_restore --clean --if-exists --no-owner"  # as docs/operations.md gives it


def rows(path: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        try:
            return conn.execute(sql).fetchall()
        except sqlite3.OperationalError:  # the warehouse's table comes with its first delivery
            return []


class Sender(threading.Thread):
    """Posts batches of new ticket checks until stopped; counts the acknowledged ones."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.acked, self.stopping = url, 0, threading.Event()

    def run(self) -> None:
        with requests.Session() as session:
            while not self.stopping.is_set():
                answer = session.post(f"{self.url}/s360/ticketchecks/testvenue",
                                      json=checks(1 + self.acked * BATCH, BATCH),
                                      headers={"x-api-key": API_KEY}, timeout=30)
                assert answer.json()["accepted"] == BATCH
                self.acked += 1


def test_a_backup_taken_while_the_bridge_ingests_is_consistent_and_restores(tmp_path,
                                                                          secrets_env):
    path = write_config(tmp_path, base_config(tmp_path))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start(["run", "-c", str(path), "--port", str(port)], tmp_path / "run.log")
    sender = Sender(url)
    try:
        wait_until(lambda: healthy(url), 30, "the receiver to be ready", proc)
        sender.start()
        wait_until(lambda: sender.acked >= 5 and rows(
            tmp_path / "warehouse.db", "SELECT 1 FROM ticket_checks"), 60,
            "records acknowledged and delivered", proc)
        before = sender.acked
        done = subprocess.run([S360BRIDGE, "db", "backup", "-c", str(path), "--to",
                               str(tmp_path / "backup")], capture_output=True, text=True,
                              timeout=120)
        after = sender.acked
        assert done.returncode == 0, done.stderr
        wait_until(lambda: sender.acked > after, 30, "one more batch after the backup", proc)
    finally:
        sender.stopping.set()
        sender.join(30)
        assert stop(proc) == 0
    assert done.stdout.splitlines() == [
        f"the engine database: {tmp_path}/engine.db -> {tmp_path}/backup/engine.db",
        f"target datx of testvenue: {tmp_path}/warehouse.db -> {tmp_path}/backup/warehouse.db"]
    engine, warehouse = tmp_path / "backup" / "engine.db", tmp_path / "backup" / "warehouse.db"
    assert rows(engine, "PRAGMA integrity_check") == [("ok",)]
    assert rows(warehouse, "PRAGMA integrity_check") == [("ok",)]
    [(copied,)] = rows(engine, "SELECT count(*) FROM inbox")
    assert copied % BATCH == 0  # whole transactions only: the copy is one moment's
    # taken while the sender went on (one request at a time: one in flight at most)
    assert before * BATCH <= copied <= (after + 1) * BATCH
    assert rows(engine, "SELECT inbox_id FROM delivery WHERE inbox_id NOT IN "
                        "(SELECT id FROM inbox)") == []
    assert rows(engine, "SELECT id FROM queue WHERE id NOT IN (SELECT id FROM inbox)") == []
    delivered = {k for (k,) in rows(engine, "SELECT record_key FROM inbox_state "
                                            "WHERE state = 'done'")}
    in_warehouse = {k for (k,) in rows(warehouse, "SELECT check_key FROM ticket_checks")}
    assert delivered and delivered <= in_warehouse  # copied after the engine: never behind
    # and maybe ahead: a restored engine numbers its next versions past the warehouse's
    [(counted,)] = rows(engine, "SELECT seq FROM sqlite_sequence WHERE name = 'inbox'")
    [(largest,)] = rows(engine, "SELECT max(id) FROM inbox")
    [(newest,)] = rows(warehouse, "SELECT max(source_seq) FROM ticket_checks")
    assert counted >= largest + backup.AHEAD > newest

    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(engine, restored / "engine.db")
    shutil.copy(warehouse, restored / "warehouse.db")
    cfg = base_config(restored)
    config = write_config(restored, cfg)
    upgrade = subprocess.run([S360BRIDGE, "db", "upgrade", "-c", str(config)],
                             capture_output=True, text=True, timeout=60)
    assert upgrade.stdout == "the schema is up to date\n", upgrade.stderr
    status = subprocess.run([S360BRIDGE, "status", "--json", "-c", str(config)],
                            capture_output=True, text=True, timeout=60)
    states = json.loads(status.stdout)["testvenue"]["streams"]["ticketchecks"]["states"]
    assert sum(states.values()) == copied
    bridge = bridge_of(config)
    drain(bridge)  # the restored engine delivers what its warehouse copy lacked
    bridge.close()
    keys = {k for (k,) in rows(restored / "engine.db", "SELECT record_key FROM inbox")}
    assert {k for (k,) in rows(restored / "warehouse.db",
                               "SELECT check_key FROM ticket_checks")} >= keys


def test_a_backup_refuses_to_overwrite_and_names_what_it_lacks(tmp_path, secrets_env,
                                                               runner, monkeypatch):
    cfg = base_config(tmp_path)
    cfg["targets"]["dwh"] = {"type": "sql", "url": {"$env": "TEST_UNSET_DSN"}}
    monkeypatch.delenv("TEST_UNSET_DSN", raising=False)
    path = write_config(tmp_path, cfg)

    def backup(to: str):
        return runner.invoke(cli, ["db", "backup", "-c", str(path), "--to", str(tmp_path / to)])
    result = backup("first")
    assert result.exit_code == 2 and not (tmp_path / "first").exists()
    assert result.output == (f"error: {path}: targets.dwh.url: environment variable "
                             "TEST_UNSET_DSN is not set (or empty)\n")
    del cfg["targets"]["dwh"]
    write_config(tmp_path, cfg)
    result = backup("first")
    assert result.exit_code == 2
    assert "the engine database: " in result.output and "no such SQLite database" in result.output
    bridge_of(path).close()  # the engine database exists now; the warehouse not yet
    result = backup("first")
    assert result.exit_code == 2
    assert f"target datx of testvenue: {tmp_path}/warehouse.db: no such" in result.output
    sqlite3.connect(tmp_path / "warehouse.db").close()
    assert backup("first").exit_code == 0
    result = backup("first")
    assert result.exit_code == 2
    assert result.output == (f"error: {tmp_path}/first/engine.db exists already: back up into "
                             "a new folder\n")


@needs_pg
def test_on_postgresql_the_backup_names_the_pg_dump_command_which_restores(
        tmp_path, secrets_env, pg_schemas, runner):
    schema_url = pg_schemas.new("engine")
    cfg = base_config(tmp_path)
    cfg["engine"]["database_url"] = schema_url
    path = write_config(tmp_path, cfg)
    bridge = bridge_of(path)
    client = create_app(bridge).test_client()
    post(client, "orders", fixture("order_sale.json"))
    drain(bridge)

    result = runner.invoke(cli, ["db", "backup", "-c", str(path), "--to", str(tmp_path / "b")])
    assert result.exit_code == 1
    assert result.stdout == (f"target datx of testvenue: {tmp_path}/warehouse.db -> "
                             f"{tmp_path}/b/warehouse.db\n")
    said, command = result.stderr.splitlines()
    assert said == "the engine database is on PostgreSQL: back it up with"
    password = make_url(PG).password
    assert f":{password}@" not in command  # pg_dump reads it from PGPASSWORD or ~/.pgpass
    args = shlex.split(command)
    schema = make_url(schema_url).query["options"].split("=")[1]
    assert args[:3] == ["pg_dump", "--format=custom", f"--file={tmp_path}/b/engine.dump"]
    assert args[-1] == f"--schema={schema}"
    env = {**os.environ, "PGPASSWORD": password}
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=120)

    post(client, "orders", fixture("order_refund.json"))  # after the backup: undone below
    bridge.close()
    dbname = args[3]
    assert f"{RESTORE} --dbname=" in (ROOT / "docs" / "operations.md").read_text("utf-8")
    subprocess.run([*shlex.split(RESTORE), dbname, f"{tmp_path}/b/engine.dump"], env=env,
                   check=True, capture_output=True, timeout=120)
    status = runner.invoke(cli, ["status", "--json", "-c", str(path)])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["testvenue"]["streams"]["orders"]["states"] == {"done": 2}


def test_a_warehouse_two_institutions_share_is_copied_once_and_names_never_clash(
        tmp_path, secrets_env, runner):
    first = base_config(tmp_path)
    second = {**base_config(tmp_path), "institution": "othervenue", "engine": first["engine"]}
    (tmp_path / "conf").mkdir()
    write_config(tmp_path / "conf", first, "first.yaml")
    write_config(tmp_path / "conf", second, "second.yaml")
    bridge_of(tmp_path / "conf").close()
    sqlite3.connect(tmp_path / "warehouse.db").close()

    def backup(to: str):
        return runner.invoke(cli, ["db", "backup", "-c", str(tmp_path / "conf"), "--to",
                                   str(tmp_path / to)])
    result = backup("shared")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "shared").iterdir()) == ["engine.db",
                                                                        "warehouse.db"]
    (tmp_path / "elsewhere").mkdir()
    sqlite3.connect(tmp_path / "elsewhere" / "warehouse.db").close()
    second["targets"]["datx"]["url"] = f"sqlite:///{tmp_path}/elsewhere/warehouse.db"
    write_config(tmp_path / "conf", second, "second.yaml")
    result = backup("clash")
    assert result.exit_code == 2 and not (tmp_path / "clash").exists()
    assert "two databases would be copied to warehouse.db" in result.output
