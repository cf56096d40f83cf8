"""The engine and warehouse databases of one benchmark backend: SQLite files in the work folder,
or two databases of a PostgreSQL server (a private cluster, or one named by --postgres)."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import yaml
from pgcluster import PrivateCluster

API_KEY = "bench-key"
# what PostgreSQL ran with, printed beside its figures
SETTINGS = ("server_version", "shared_buffers", "work_mem", "effective_cache_size",
            "max_connections", "fsync", "synchronous_commit", "full_page_writes", "wal_level",
            "wal_compression", "max_wal_size", "checkpoint_timeout", "autovacuum",
            "autovacuum_naptime", "jit")


@dataclass
class Backend:
    name: str  # sqlite | postgresql
    folder: Path
    engine_url: str
    warehouse_url: str
    cluster: PrivateCluster | None = None

    @classmethod
    def sqlite(cls, work: Path) -> Backend:
        folder = work / "sqlite"
        folder.mkdir()
        return cls("sqlite", folder, f"sqlite:///{folder}/engine.db",
                   f"sqlite:///{folder}/warehouse.db")

    @classmethod
    def postgresql(cls, work: Path, cluster: PrivateCluster | None, url: str | None
                   ) -> Backend:
        folder = work / "postgresql"
        folder.mkdir()
        if cluster is not None:
            return cls("postgresql", folder, cluster.url("bench_engine"),
                       cluster.url("bench_warehouse"), cluster)
        # a server of the user's: two schemas of the database named, made empty first
        engine, warehouse = (f"{url}?options=-csearch_path%3D{s}"
                             for s in ("s360bench_engine", "s360bench_warehouse"))
        backend = cls("postgresql", folder, engine, warehouse)
        for schema in ("s360bench_engine", "s360bench_warehouse"):
            backend._pg(url, f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        return backend

    @property
    def config(self) -> Path:
        return self.folder / "bench.yaml"

    def write_config(self, synchronous: str) -> Path:
        cfg = {"institution": "bench", "timezone": "Europe/Zurich",
               "targets": {"datx": {"type": "sql", "url": self.warehouse_url}},
               "streams": {"ticketchecks": {
                   "auth": {"type": "api_key", "header": "x-api-key",
                            "key": {"$env": "BENCH_API_KEY"}},
                   "targets": ["datx"]}},
               "engine": {"database_url": self.engine_url,
                          "sqlite_synchronous": synchronous}}
        self.config.write_text(yaml.safe_dump(cfg))
        return self.config

    def env(self) -> dict:
        return {"BENCH_API_KEY": API_KEY, "S360BRIDGE_CONFIG": str(self.config)}

    def scalar(self, which: str, sql: str):
        """One value from the engine or the warehouse database (None on no row)."""
        url = self.engine_url if which == "engine" else self.warehouse_url
        if self.name == "sqlite":
            with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
                row = conn.execute(sql).fetchone()
        else:
            row = self._pg(url, sql)
        return row[0] if row else None

    @staticmethod
    def _pg(url: str, sql: str):
        import psycopg

        plain = url.replace("postgresql+psycopg://", "postgresql://")
        plain, _, options = plain.partition("?options=")
        kwargs = {"options": options.replace("%3D", "=")} if options else {}
        with psycopg.connect(plain, autocommit=True, **kwargs) as conn:
            cur = conn.execute(sql)
            return cur.fetchone() if cur.description else None

    def settings(self) -> dict[str, str]:
        return {n: self.scalar("engine", f"SHOW {n}") for n in SETTINGS}

    def wal_bytes(self) -> int:
        """Where PostgreSQL's write-ahead log is, in bytes since its start."""
        return int(self.scalar("engine", "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))

    def cpu_seconds(self) -> float | None:
        return self.cluster.cpu_seconds() if self.cluster is not None else None
