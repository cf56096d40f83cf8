"""The offers' gauges on ``/metrics``: offers not finished yet by institution, caller and
state, and the oldest one's age, read from the partial index of unfinished offers."""

from __future__ import annotations

import re
import time

from sqlalchemy import select, text

from s360bridge.core.operator.app import create_operator_app
from s360bridge.plugins.offers import store

from .conftest import base_config, bridge_of, write_config
from .helpers.metrics import OPERATOR_AUTH, OPERATOR_ENV, Scrape, operator_settings


def test_unfinished_offers_by_caller_and_state(tmp_path, monkeypatch, secrets_env):
    for k, v in {**OPERATOR_ENV, "TEST_SHOP_KEY": "key-of-the-shop-0123456789",
                 "TEST_CRM_IN_KEY": "key-of-the-crm-0123456789"}.items():
        monkeypatch.setenv(k, v)
    cfg = base_config(tmp_path)
    cfg["engine"]["operator"] = operator_settings()
    cfg["services"] = {"offers": {
        "auth": {"type": "api_key", "header": "x-api-key", "key": {"$env": "TEST_CRM_IN_KEY"}},
        "callers": {"shop": {"auth": {"type": "api_key", "header": "x-api-key",
                                      "key": {"$env": "TEST_SHOP_KEY"}},
                             "options": {"families": ["PASS"]}}}}}
    bridge = bridge_of(write_config(tmp_path, cfg))
    engine = bridge.engine
    ids = {key: store.create(engine, "testvenue", key, {"lines": []}, caller)[0]["id"]
           for key, caller in (("a", ""), ("b", ""), ("c", "shop"), ("d", "shop"))}
    store.save(engine, ids["b"], state="uncertain")
    store.save(engine, ids["d"], state="done")
    ops = create_operator_app(bridge).test_client()
    r = ops.get("/metrics", auth=OPERATOR_AUTH)
    assert r.status_code == 200
    seen = Scrape(r.text)
    name = "s360bridge_offers_unfinished"
    assert seen(name, institution="testvenue", caller="crm", state="new") == 1
    assert seen(name, institution="testvenue", caller="crm", state="uncertain") == 1
    assert seen(name, institution="testvenue", caller="shop", state="new") == 1
    assert seen.get(name, institution="testvenue", caller="shop", state="done") is None
    age = seen("s360bridge_offers_oldest_unfinished_age_seconds", institution="testvenue",
               caller="crm", state="new")
    assert 0 <= age < time.time() - store.row(engine, ids["a"])["created_at"] + 5
    page = ops.get("/offers?caller=shop", auth=OPERATOR_AUTH).text  # the plugin's page
    assert '<a href="/offers">Offers</a>' in page or 'href="/offers" class="here">Offers' in page
    rows = re.findall(r"<tr><td class=\"num\">(\d+)</td><td>testvenue</td><td>(\w+)</td>", page)
    assert rows == [(str(ids["d"]), "shop"), (str(ids["c"]), "shop")]  # newest first
    assert "<td>c</td><td>create</td>\n    <td class=\"\">new</td>" in page
    assert ops.get("/offers", auth=None).status_code == 401
    with engine.connect() as conn:  # the index, not every offer ever made
        query = select(store.OFFERS.c.id).where(store.UNFINISHED)
        plan = conn.execute(text(f"EXPLAIN QUERY PLAN {query.compile(engine)}")).all()
    assert "ix_offer_unfinished" in str(plan), plan
    bridge.close()
