"""Refusals that tell nothing: an unknown institution, a stream not enabled and wrong
credentials get the same 401; the log says why, in a bounded number of lines."""

from __future__ import annotations

import logging

import pytest

from s360bridge.core.pipeline.refusals import RefusalLog

from .conftest import API_KEY, PASSWORD
from .helpers.clock import Clock

ANSWER = {"error": "not authorized (the bridge's log says why)", "status": 401}

REFUSED = [
    # (url, request options, the reason the log gives)
    ("/s360/orders/nowhere", {}, "unknown institution 'nowhere'"),
    ("/s360/contacts/nowhere", {"auth": ("s360", PASSWORD)}, "unknown institution 'nowhere'"),
    ("/s360/coupons/testvenue", {}, "stream s360/coupons is not enabled for 'testvenue'"),
    ("/crm/contacts/testvenue", {}, "stream crm/contacts is not enabled for 'testvenue'"),
    ("/s360/contacts/testvenue", {"auth": ("s360", "wrong")},
     "missing or wrong basic authentication"),
    ("/s360/contacts/testvenue", {}, "missing or wrong basic authentication"),
    ("/s360/ticketchecks/testvenue", {"headers": {"x-api-key": PASSWORD}},
     "missing or wrong API key in header x-api-key"),
    ("/s360/ticketchecks/testvenue", {"auth": ("s360", API_KEY)},
     "missing or wrong API key in header x-api-key"),
]


@pytest.mark.parametrize("url,opts,reason", REFUSED)
def test_every_refusal_that_could_tell_a_venue_code_is_the_same_401(client, caplog, url, opts,
                                                                     reason):
    caplog.set_level(logging.INFO, "s360bridge.receiver")
    resp = client.post(url, data=b"[{}]", **opts)
    assert (resp.status_code, resp.json) == (401, ANSWER)
    assert resp.headers["WWW-Authenticate"] == 'Basic realm="s360bridge"'
    assert caplog.messages == [f"POST {url} from 127.0.0.1 refused with 401: {reason}"]


def test_a_flood_of_refusals_writes_one_line_per_kind(client, caplog):
    caplog.set_level(logging.INFO, "s360bridge.receiver")
    for i in range(300):  # a scan of venue codes, then of passwords
        assert client.post(f"/s360/orders/venue{i}", data=b"[{}]").status_code == 401
        assert client.post("/s360/contacts/testvenue", data=b"[{}]",
                           auth=("s360", f"guess{i}")).status_code == 401
    assert caplog.messages == [
        "POST /s360/orders/venue0 from 127.0.0.1 refused with 401: unknown institution 'venue0'",
        "POST /s360/contacts/testvenue from 127.0.0.1 refused with 401: missing or wrong basic "
        "authentication"]
    assert {r.levelname for r in caplog.records} == {"WARNING"}


def test_each_period_logs_the_first_of_each_kind_then_the_count_of_the_others(caplog):
    clock, log = Clock(1000.0), logging.getLogger("s360bridge.test.refusals")
    refusals = RefusalLog(log, every=60, clock=clock)
    caplog.set_level(logging.INFO, log.name)
    for i in range(5):
        refusals.refused("401 unknown institution", "unknown institution %r", f"v{i}")
    refusals.refused("403 source not allowed", "from %s", "192.0.2.9")
    clock.now += 59.9  # still the first period
    refusals.refused("401 unknown institution", "unknown institution %r", "late")
    assert caplog.messages == ["unknown institution 'v0'", "from 192.0.2.9"]
    clock.now += 0.1  # the next period: the count of the last, and a first of its kind again
    refusals.refused("401 wrong credentials", "wrong password for %s", "contacts")
    refusals.refused("401 unknown institution", "unknown institution %r", "v9")
    assert caplog.messages[2:] == [
        "5 more request(s) refused in the last 60s, not logged one by one: "
        "401 unknown institution x5",
        "wrong password for contacts", "unknown institution 'v9'"]
    clock.now += 600  # a quiet period after one with nothing held back: no summary
    refusals.refused("401 unknown institution", "unknown institution %r", "v10")
    assert caplog.messages[5:] == ["unknown institution 'v10'"]


def test_a_service_refuses_alike_and_its_own_answers_stay_its_own(client, caplog):
    caplog.set_level(logging.INFO, "s360bridge.receiver")
    for code in ("testvenue", "nowhere"):  # offers not enabled here; no such institution
        resp = client.get(f"/crm/offers/{code}/1")
        assert (resp.status_code, resp.json) == (401, ANSWER)
    assert caplog.messages == [
        "GET /crm/offers/testvenue/1 from 127.0.0.1 refused with 401: service offers is not "
        "enabled for 'testvenue'",
        "GET /crm/offers/nowhere/1 from 127.0.0.1 refused with 401: unknown institution "
        "'nowhere'"]
