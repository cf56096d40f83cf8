"""A private PostgreSQL cluster for a benchmark run: its own data folder, port and socket,
default settings with fsync on, started and stopped by the benchmark itself (never the
machine's shared cluster). As root, the server runs as the ``postgres`` user."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

USER = "postgres"


def binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian's layout), or None."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrivateCluster:
    """``with PrivateCluster() as pg: pg.url("bench")``; databases are created on demand."""

    def __init__(self, settings: dict[str, str] | None = None):
        self.bin = binaries()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql), "
                               "or give --postgres URL")
        self.settings = settings or {}
        self.folder = Path(tempfile.mkdtemp(prefix="s360bench-pg-"))
        self.data = self.folder / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        if self.as_root:
            cmd = ("runuser", "-u", USER, "--", *cmd)
        return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)

    def __enter__(self) -> PrivateCluster:
        if self.as_root:
            shutil.chown(self.folder, USER)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER,
                  "--no-instructions")
        options = " ".join([f"-p {self.port}", f"-k {self.folder}",
                            "-c listen_addresses=127.0.0.1",
                            *(f"-c {k}={v}" for k, v in self.settings.items())])
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l",
                  str(self.folder / "server.log"), "-o", options, "-w", "start")
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w",
                      "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def sql(self, statement: str, database: str = "postgres") -> str:
        return self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port),
                         "-U", USER, "-d", database, "-qtAc", statement).stdout.strip()

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of ``database``, created empty if it does not exist."""
        if not self.sql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'"):
            self.sql(f'CREATE DATABASE "{database}"')
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def pids(self) -> list[int]:
        """The postmaster's and its children's (backends, checkpointer, WAL writer,
        autovacuum…)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)],
                                  capture_output=True, text=True).stdout.split()
        return [pid, *map(int, children)]

    def memory_mib(self) -> dict[str, float]:
        """The server's resident memory, its processes summed: ``rss`` counts the shared
        buffers a process touched once per process; ``pss`` shares each page between the
        processes that map it, so its sum is what the server holds. And how many processes
        it has: one per client connection, and its own (checkpointer, WAL writer…)."""
        total = {"rss": 0, "pss": 0}
        pids = self.pids()
        for pid in pids:
            try:
                text = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue  # ended between the listing and the read
            for name in total:
                found = re.search(rf"^{name.capitalize()}:\s+(\d+) kB", text, re.M)
                total[name] += int(found.group(1)) if found else 0
        return {**{name: round(kib / 1024) for name, kib in total.items()},
                "processes": len(pids)}

    def cpu_seconds(self) -> float:
        """CPU time of the server so far: the postmaster, its finished children (counted in
        its own figures once reaped) and its live ones."""
        tick = os.sysconf("SC_CLK_TCK")

        def stat(p: int) -> list[str]:
            text = Path(f"/proc/{p}/stat").read_text()
            return text[text.rindex(")") + 2:].split()

        postmaster, *children = self.pids()
        fields = stat(postmaster)  # utime, stime, cutime, cstime: fields 14-17 (index 11-14)
        total = sum(int(x) for x in fields[11:15])
        for child in children:
            try:
                total += sum(int(x) for x in stat(child)[11:13])
            except (OSError, ValueError):
                pass  # ended between the listing and the read: its time is the parent's now
        return total / tick
