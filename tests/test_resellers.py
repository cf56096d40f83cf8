"""Resellers beside the CRM operator on one institution (tests/helpers/shop.py: ``eventim``
sells events and passes, ``passhop`` passes only): each its own credentials, families, limits
and orders, through /resellers/v1, over real HTTP against the simulator."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from s360bridge.core.config import load_settings
from s360bridge.core.errors import ConfigError
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.plugins.offers import store

from .conftest import write_config
from .helpers.shop import LINES, PERF

PASS = LINES["open pass"]


def test_a_reseller_sells_and_reads_only_its_own_orders(shop):
    r = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": "eventim-1", "lines": [LINES["event"]]})
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["state"], order["order_type"], len(order["barcodes"])) == ("closed", "SALE", 2)
    assert order["url"] == f"/resellers/v1/testvenue/orders/{order['id']}"
    assert shop.reseller("eventim", "GET", f"/orders/{order['id']}").json()["order_id"] == \
        order["order_id"]
    other = shop.reseller("passhop", "GET", f"/orders/{order['id']}")
    assert other.status_code == 404  # another reseller's order is as good as none
    assert shop.reseller("passhop", "POST", f"/orders/{order['id']}/cancel").status_code == 404
    crm = shop.follow_up(order["id"], "cancel")  # nor is it the CRM operator's
    assert crm.status_code == 404
    sent = shop.api.order_stores["testvenue"].get(order["order_id"])["orderDetailsData"]
    assert sent["orderType"] == "SALE"
    row = store.row(shop.bridge.engine, order["id"])
    assert json.loads(row["result"])["plan"]["body"]["externalReference"] == \
        "s360bridge:testvenue:eventim:eventim-1"


def test_each_caller_has_its_own_idempotency_keys(shop):
    a = shop.reseller("eventim", "POST", "/orders", json={"idempotency_key": "k", "lines": [PASS]})
    b = shop.reseller("passhop", "POST", "/orders", json={"idempotency_key": "k", "lines": [PASS]})
    crm = shop.offer("k", PASS)
    assert (a.status_code, b.status_code, crm.status_code) == (201, 201, 201)
    assert len({a.json()["order_id"], b.json()["order_id"], crm.json()["order_id"]}) == 3
    again = shop.reseller("passhop", "POST", "/orders", json={"idempotency_key": "k",
                                                              "lines": [PASS]})
    assert again.json()["order_id"] == b.json()["order_id"]
    assert shop.calls("createOrUpdateOrder") == 3


def test_a_reseller_sells_only_its_families_and_within_its_limits(shop):
    family = shop.reseller("passhop", "POST", "/orders", json={
        "idempotency_key": "x", "lines": [PASS, LINES["event"]]})
    assert family.status_code == 403
    assert "may not sell product family SINGLE_ENTRY (HAMLET)" in family.json()["error"]
    many = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": "y", "lines": [{**PASS, "quantity": 7}]})
    assert many.status_code == 422 and "more than the 6" in many.json()["error"]
    found = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": "z", "lines": [PASS], "purchaser": {"email": "a@b.ch"}})
    assert found.status_code == 403 and "may attach existing contacts" in found.text
    holders = shop.reseller("passhop", "POST", "/orders", json={
        "idempotency_key": "w", "lines": [PASS], "holders": ["0001234"]})
    assert holders.status_code == 403 and "may not attach contacts" in holders.text
    assert shop.calls("createOrUpdateOrder") == 0
    for i in range(3):  # passhop: 3 offers a minute
        made = shop.reseller("passhop", "POST", "/orders", json={
            "idempotency_key": f"rate-{i}", "lines": [PASS]})
        assert made.status_code == 201, made.text
    over = shop.reseller("passhop", "POST", "/orders", json={
        "idempotency_key": "rate-3", "lines": [PASS]})
    assert over.status_code == 429 and over.headers["Retry-After"] == "60"


def test_the_operator_and_the_resellers_keep_to_their_own_api(shop):
    crm_key = {"x-api-key": "crm-posts-its-changes-with-this"}
    as_operator = shop.reseller("eventim", "GET", "/catalog", headers=crm_key)
    assert as_operator.status_code == 403 and "/crm/offers/testvenue" in as_operator.text
    wrong = shop.reseller("eventim", "GET", "/catalog", headers={"x-api-key": "nope"})
    assert wrong.status_code == 401
    import requests

    as_reseller = requests.post(f"{shop.proc.url}/crm/offers/testvenue", timeout=10,
                                json={"idempotency_key": "q", "lines": [PASS]},
                                headers={"x-api-key": "key-of-reseller-eventim-0123456789"})
    assert as_reseller.status_code == 403 and "/resellers/v1/testvenue" in as_reseller.text


def test_the_catalog_has_the_resellers_families_and_an_etag(shop):
    r = shop.reseller("passhop", "GET", "/catalog")
    assert r.status_code == 200
    products = [p for s in r.json()["catalog"]["seasons"] for p in s["products"]]
    assert {p["productFamilyType"] for p in products} == {"PASS"}
    assert shop.reseller("passhop", "GET", "/catalog",
                         headers={"If-None-Match": r.headers["ETag"]}).status_code == 304
    wide = shop.reseller("eventim", "GET", "/catalog")
    assert wide.headers["ETag"] != r.headers["ETag"]
    assert "HAMLET" in wide.text and "HAMLET" not in r.text


def test_availabilities_are_filtered_and_say_their_age(shop):
    assert shop.reseller("passhop", "GET", "/availability").status_code == 503  # not read yet
    from s360bridge.plugins.offers import catalog as cache

    cache.refresh_availability(shop.bridge, shop.inst, 3600, force=True)
    assert shop.reseller("eventim", "GET", "/availability").status_code == 503  # its channel's
    cache.refresh_availability(shop.bridge, shop.inst, 3600, "TEST_EVENTIM", force=True)
    r = shop.reseller("passhop", "GET", "/availability").json()
    assert 0 <= r["age_seconds"] < 60
    assert r["availability"]["item:10228231108401"] == 200
    assert not any(k.startswith("seats:") for k in r["availability"])
    events = shop.reseller("eventim", "GET", "/availability").json()["availability"]
    assert events[f"seats:{PERF}:302"] == 40


def test_the_openapi_document_is_valid_and_describes_the_routes(shop):
    doc = shop.reseller("eventim", "GET", "/openapi.json").json()
    validate(doc)  # the OpenAPI 3.1 specification
    assert doc["servers"] == [{"url": "/resellers/v1/testvenue"}]
    assert doc["components"]["securitySchemes"]["reseller"] == {
        "type": "apiKey", "in": "header", "name": "x-api-key"}
    app = create_app(shop.bridge)
    routes = {(rule.rule.replace("/resellers/v1/<code>", "").replace("<int:offer_id>",
                                                                     "{order_id}")
               .replace("<action>", "{action}").replace("<int:movement_id>", "{movement_id}"),
               method.lower())
              for rule in app.url_map.iter_rules() if rule.rule.startswith("/resellers/v1/")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, ops in doc["paths"].items() for method in ops}
    assert documented == routes


@pytest.mark.parametrize("caller, message", [
    ({"auth": {"type": "none"}}, "a caller is known by its credentials"),
    ({"auth": {"type": "api_key", "header": "x", "key": {"$env": "K"}},
      "options": {"families": ["CONCERT"]}}, "families"),
    ({"auth": {"type": "api_key", "header": "x", "key": {"$env": "K"}}, "options": {}},
     "families"),
    ({"auth": {"type": "api_key", "header": "x-api-key", "key": {"$env": "TEST_CRM_IN_KEY"}},
      "options": {"families": ["PASS"]}}, "the same credentials as the service's own auth"),
])
def test_a_reseller_badly_configured_is_one_clear_error(shop, tmp_path, monkeypatch, caller,
                                                        message):
    import yaml

    from s360bridge.core.bridge import Bridge

    monkeypatch.setenv("K", "some-key-of-at-least-8")
    data = yaml.safe_load(shop.config.read_text())
    data["services"]["offers"]["callers"] = {"bad": caller}
    path = write_config(tmp_path, data, "bad.yaml")
    with pytest.raises(ConfigError, match=message):
        Bridge(load_settings([path]), schema="ignore")


def test_a_reseller_pays_its_sales_and_s360_down_is_503_not_500(shop, monkeypatch):
    unpaid = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": "unpaid", "lines": [PASS], "pay": False})
    assert unpaid.status_code == 403 and "pay cannot be false" in unpaid.text
    from s360bridge.core.api import S360Unavailable
    from s360bridge.plugins.offers import catalog as cache

    def down(bridge, inst, channel=None):
        raise S360Unavailable("S-360 getCatalogDetailed: HTTP 503")
    monkeypatch.setattr(cache, "catalog_of", down)
    for method, path, body in (("GET", "/catalog", None), ("GET", "/availability", None),
                               ("POST", "/orders", {"idempotency_key": "d", "lines": [PASS]})):
        r = shop.reseller("eventim", method, path, json=body)
        assert (r.status_code, r.headers.get("Retry-After")) == (503, "30"), (path, r.text)
    long_key = shop.reseller("eventim", "POST", "/orders", json={"lines": [PASS]},
                             headers={"Idempotency-Key": "k" * 201})
    assert long_key.status_code == 400
    assert shop.calls("createOrUpdateOrder") == 0


def test_a_reseller_keeps_to_its_share_of_the_call_budget(shop):
    """passhop may make 1 call a window per method (the institution 500): its two offers
    made at once share it, spread over two windows; eventim, without a cap, is not held."""
    import threading

    answers = []

    def buy(key):
        answers.append(shop.reseller("passhop", "POST", "/orders", json={
            "idempotency_key": key, "lines": [PASS]}))
    threads = [threading.Thread(target=buy, args=(k,)) for k in ("share-a", "share-b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(a.status_code for a in answers) == [201, 201], [a.text for a in answers]
    windows = shop.api.per_window("createOrUpdateOrder")
    assert sum(windows.values()) == 2 and max(windows.values()) == 1
    free = shop.reseller("eventim", "POST", "/orders", json={"idempotency_key": "free",
                                                           "lines": [PASS]})
    assert free.status_code == 201


def test_two_resellers_and_the_crm_sell_at_once_each_within_its_own(shop):
    """eventim (events, passes), passhop (passes, 1 call a window) and the CRM operator sell
    on one institution at the same time: each gets its own orders, within its families; no
    order twice, no call over S-360's budget."""
    import threading

    answers: dict[str, list] = {"eventim": [], "passhop": [], "crm": []}

    def sell(who, lines):
        for i, line in enumerate(lines):
            if who == "crm":
                r = shop.offer(f"crm-{i}", line)
            else:
                r = shop.reseller(who, "POST", "/orders", json={
                    "idempotency_key": f"{who}-{i}", "lines": [line]})
            answers[who].append(r)

    jobs = {"eventim": [LINES["event"], PASS], "passhop": [PASS, PASS],
            "crm": [LINES["season ticket"], LINES["visit pass"]]}
    threads = [threading.Thread(target=sell, args=item) for item in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    for who, got in answers.items():
        assert [r.status_code for r in got] == [201, 201], (who, [r.text for r in got])
    orders = [r.json()["order_id"] for got in answers.values() for r in got]
    assert len(set(orders)) == 6 and shop.calls("createOrUpdateOrder") == 6
    assert shop.api.count(status=509) == 0
    for who in ("eventim", "passhop"):
        mine = {o["id"] for o in (r.json() for r in answers[who])}
        other = "passhop" if who == "eventim" else "eventim"
        assert all(shop.reseller(other, "GET", f"/orders/{i}").status_code == 404 for i in mine)
