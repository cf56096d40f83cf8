"""What the processes of a benchmark phase used: CPU time and peak memory of each, PostgreSQL's
CPU, WAL and summed memory, and how busy the whole machine was."""

from __future__ import annotations

import time
from contextlib import nullcontext

from backends import Backend
from processes import Peak, cpu_seconds, machine_seconds, rss_kib


def server_memory(b: Backend | None):
    """A sampler of PostgreSQL's summed memory while a block runs (nothing for a server not
    on this machine, or SQLite)."""
    return Peak(b.cluster.memory_mib) if b is not None and b.cluster is not None \
        else nullcontext()


def snapshot(b: Backend | None) -> dict:
    """The machine's and PostgreSQL's counters at the start of a phase."""
    snap = {"at": time.monotonic(), "machine": machine_seconds()}
    if b is not None and b.name == "postgresql":
        snap["wal"] = b.wal_bytes()
        snap["cpu"] = b.cpu_seconds()  # None for a server on another machine
    return snap


def used(b: Backend | None, processes: dict[str, list[int]], cpu_before: dict[int, float],
         snap: dict, records: int, memory) -> dict:
    """What each process used since ``snap``, over a phase that handled ``records``."""
    seconds = time.monotonic() - snap["at"]
    out = {name: [{"cpu_s": round(cpu_seconds(p) - cpu_before.get(p, 0.0), 2),
                   "peak_rss_mib": round(rss_kib(p, "VmHWM") / 1024)} for p in pids]
           for name, pids in processes.items()}
    out["seconds"] = round(seconds, 2)
    for name, value in machine_seconds().items():
        out[f"machine_{name}_cores"] = round((value - snap["machine"][name]) / seconds, 2)
    if "wal" in snap:
        pg = out["postgresql"] = {
            "wal_bytes_per_record": round((b.wal_bytes() - snap["wal"]) / max(records, 1))}
        if snap["cpu"] is not None:
            cpu = b.cpu_seconds() - snap["cpu"]
            pg.update({"cpu_s": round(cpu, 2),
                       "cpu_ms_per_1000": round(cpu / max(records, 1) * 1e6, 1),
                       "peak_pss_mib": memory.value.get("pss"),
                       "peak_rss_mib": memory.value.get("rss"),
                       "peak_processes": memory.value.get("processes")})
    return out
