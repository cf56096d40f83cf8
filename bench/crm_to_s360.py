"""Benchmark: CRM contact changes pushed to S-360 inside its rate limit.

The simulator's S-360 allows ``--limit`` calls per minute and method (fixed one-minute windows,
509 above). The CRM POSTs ``--changes`` changes to the bridge at once: updates of contacts S-360
knows (``saveIndividualContactData``, one call each) and ``--new`` contacts it does not
(``searchContact`` by e-mail, one call each, then ``createCulturalContact`` in lists). One
``s360bridge`` worker process role delivers them. Reported: contacts a minute, calls per method,
509 answers, utilisation (calls a minute of a method ÷ the limit) while its work lasted, and the
most calls S-360 counted in one of its minute windows.

    python bench/crm_to_s360.py                    # 1,000 changes, limit 600/min (~75 s)
    python bench/crm_to_s360.py --limit 60 --changes 100
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import requests
import yaml

from s360bridge.core.bridge import Bridge
from s360bridge.core.config import load_settings
from s360bridge.core.pipeline.processes import Process
from s360bridge.simulator.api import ApiAccess, S360Api
from s360bridge.simulator.crm import ReferenceCrm
from s360bridge.simulator.data import Generator
from s360bridge.simulator.serving import Served

SECRET = "bench-partner-secret-0123456789abcdef"


def config(tmp: Path, api_url: str, crm_url: str, client_limit: int) -> Path:
    data = {
        "institution": "benchvenue", "timezone": "Europe/Zurich",
        "s360_api": {"base_url": f"{api_url}/benchvenue", "operator": "BENCH", "partner": "b",
                     "secret": {"$env": "BENCH_S360_SECRET"},
                     "calls_per_minute": client_limit},
        "targets": {"crm": {"type": "http_crm", "contacts": {"url": f"{crm_url}/api/contacts"},
                            "contact_numbers_url": f"{crm_url}/api/contact-numbers"},
                    "s360": {"type": "s360_contacts", "contact_numbers_to": "crm"}},
        "streams": {"crm_contacts": {"targets": ["s360"]}},
        "engine": {"database_url": f"sqlite:///{tmp}/engine.db", "poll_interval_seconds": 0.1},
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--limit", type=int, default=600, help="S-360 calls a minute per method")
    ap.add_argument("--margin", type=int, default=10, help="calls the bridge leaves unused")
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--new", type=float, default=0.3, help="share of contacts new to S-360")
    args = ap.parse_args()
    os.environ["BENCH_S360_SECRET"] = SECRET
    gen = Generator(11)
    n_new = int(args.changes * args.new)
    known = [c for c in gen.records("contacts", 3 * args.changes) if "individualContact" in c]
    known = known[:args.changes - n_new]
    api = S360Api({"benchvenue": ApiAccess(SECRET, frozenset({"BENCH"}), args.limit, 60.0,
                                           partners=frozenset({"b"}))})
    api.stores["benchvenue"].add(known)
    crm = ReferenceCrm()
    ids = [crm.create(contact_number=c["contactNumber"], first_name="x", last_name="y")
           for c in known]
    mark = len(crm.changes)
    for crm_id in ids:
        crm.change(crm_id, phone=f"+41 79 {gen.rnd.randint(1000000, 9999999)}")
    for i in range(n_new):
        crm.create(first_name="New", last_name=f"Contact{i}", email=f"new{i}@bench.example")
    changes = crm.changes_since(mark)
    gen.rnd.shuffle(changes)  # a CRM's feed mixes updates and new contacts
    with tempfile.TemporaryDirectory() as tmp, Served(api.app()) as api_srv, \
            Served(crm.app()) as crm_srv:
        bridge = Bridge(load_settings([config(Path(tmp), api_srv.url, crm_srv.url,
                                              args.limit - args.margin)]), schema="upgrade")
        proc = Process(bridge, receiver=True, workers=1, scheduler=False, port=0)
        proc.start()
        try:
            r = requests.post(f"{proc.url}/crm/contacts/benchvenue", json=changes, timeout=60)
            r.raise_for_status()
            print(f"{len(changes)} CRM changes accepted ({len(known)} updates, {n_new} new); "
                  f"S-360 limit {args.limit}/min/method, bridge budget "
                  f"{args.limit - args.margin}", flush=True)
            started = time.time()
            while sum(1 for c in crm.contacts.values() if c["contact_number"]) < len(ids) + n_new \
                    or api.count("saveIndividualContactData", 200) < len(known):
                if time.time() - started > 30 * 60:
                    print("timeout", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        finally:
            proc.shutdown()
    report(api, args.limit, len(changes))
    return 0


def report(api: S360Api, limit: int, contacts: int) -> None:
    spans = defaultdict(list)
    for c in api.calls:
        spans[c.method].append(c)
    first = min(c.at for c in api.calls)
    last = max(c.at for c in api.calls)
    minutes = (last - first) / 60
    print(f"contacts a minute: {contacts / minutes:,.0f} ({contacts} in {last - first:.1f} s)")
    for method, calls in sorted(spans.items()):
        ok = [c for c in calls if c.status == 200]
        over = sum(1 for c in calls if c.status == 509)
        span = (max(c.at for c in ok) - min(c.at for c in ok)) / 60 if len(ok) > 1 else 0
        rate = (len(ok) - 1) / span if span else float("nan")
        busiest = max(api.per_window(method).values())
        print(f"  {method:<27} {len(ok):>5} calls, {over} x 509, {rate:7.1f} calls/min "
              f"over {span * 60:5.1f} s: utilisation {rate / limit:.3f}; at most {busiest} "
              "in one S-360 minute window")
    total = sum(1 for c in api.calls if c.status == 200)
    print(f"  all methods                 {total:>5} calls, "
          f"{sum(1 for c in api.calls if c.status == 509)} x 509")


if __name__ == "__main__":
    sys.exit(main())
