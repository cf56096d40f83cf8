"""The receiver: what S-360 gets back for good, partly bad and unusable requests."""

from __future__ import annotations

import copy
import json
import sqlite3

import pytest
from sqlalchemy import func, select

from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.storage.tables import INBOX, QUARANTINE

from .conftest import API_KEY, PASSWORD, base_config, bridge_of, drain, fixture, post, write_config
from .helpers import ledger


def counts(bridge) -> tuple[int, int]:
    with bridge.engine.connect() as conn:
        inbox = conn.execute(select(func.count()).select_from(INBOX)).scalar_one()
        held = conn.execute(select(func.count()).select_from(QUARANTINE)).scalar_one()
    return inbox, held


def warehouse(bridge, sql: str) -> list[tuple]:
    target = bridge.target(bridge.institution("testvenue"), "datx")
    with target.engine.connect() as conn:
        return [tuple(r) for r in conn.exec_driver_sql(sql)]


EXAMPLES = [
    ("contacts", "contacts_person.json", "SELECT contact_number FROM contacts", 2),
    ("contacts", "contacts_company.json", "SELECT contact_number FROM contacts", 2),
    ("orders", "order_sale.json", "SELECT order_id FROM orders", 2),
    ("orders", "order_refund.json", "SELECT order_id FROM orders", 1),
    ("orders", "order_reservation.json", "SELECT order_id FROM orders", 1),
    ("orders", "order_abandoned.json", "SELECT order_id FROM orders", 1),
    ("ticketchecks", "ticketchecks.json", "SELECT check_key FROM ticket_checks", 4),
]


@pytest.mark.parametrize("stream,name,query,expected", EXAMPLES)
def test_reference_examples_land_in_the_warehouse(bridge, client, stream, name, query, expected):
    resp = post(client, stream, fixture(name))
    assert resp.status_code == 200, resp.json
    assert resp.json == {"accepted": expected, "duplicates": 0, "quarantined": 0,
                         "before_cutoff": 0}
    drain(bridge)
    assert len(warehouse(bridge, query)) == expected


def test_typed_columns_keep_strings_ids_and_integer_amounts(bridge, client):
    post(client, "contacts", fixture("contacts_person.json"))
    post(client, "orders", fixture("order_sale.json"))
    post(client, "orders", fixture("order_refund.json"))
    post(client, "ticketchecks", fixture("ticketchecks.json"))
    drain(bridge)
    numbers = {r[0] for r in warehouse(bridge, "SELECT contact_number FROM contacts")}
    assert "0004711" in numbers  # the leading zeros of a contact number are kept
    assert warehouse(bridge, "SELECT sale_amount, typeof(sale_amount) FROM orders "
                             "WHERE order_id = 10000815533") == [(115000, "integer")]
    assert warehouse(bridge, "SELECT sale_amount FROM orders WHERE order_id = 10000815790") \
        == [(-45000,)]
    ops = warehouse(bridge, "SELECT operation_id, quantity, total_amount FROM order_operations "
                            "WHERE order_id = 10000815533 ORDER BY operation_id")
    assert ops[0] == (10228310724422, 2, 90000)
    check = warehouse(bridge, "SELECT barcode, access_time_local, access_time_utc, "
                              "ticket_check_id FROM ticket_checks WHERE check_key = "
                              "'10228845124401'")
    # 19:21:07 in Zurich in March is 18:21:07 UTC; barcodes keep their leading zero
    assert check == [("072212349924430836880155", "2024-03-14 19:21:07.000000",
                      "2024-03-14 18:21:07.000000", 10228845124401)]


def test_single_object_is_a_batch_of_one(bridge, client):
    resp = post(client, "orders", fixture("order_sale.json")[0])
    assert resp.status_code == 200
    assert resp.json["accepted"] == 1


def test_body_is_json_whatever_the_content_type(bridge, client):
    resp = post(client, "orders", fixture("order_sale.json"), content_type="text/plain")
    assert resp.status_code == 200
    assert resp.json["accepted"] == 2


def test_one_bad_record_is_quarantined_and_the_others_accepted(bridge, client):
    good = fixture("ticketchecks.json")
    batch = [dict(good[0], ticket_check_id=10228845100000 + i) for i in range(49)]
    batch.insert(17, dict(good[0], ticket_check_id="not-a-number"))
    resp = post(client, "ticketchecks", batch)
    assert resp.status_code == 200
    assert resp.json == {"accepted": 49, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    assert counts(bridge) == (49, 1)
    with bridge.engine.connect() as conn:
        reason = conn.execute(select(QUARANTINE.c.reason)).scalar_one()
    assert "ticket_check_id" in reason


def test_all_invalid_is_still_200_and_all_quarantined(bridge, client):
    resp = post(client, "contacts", [{"contactNumber": 3346662}, {"no": "number"}])
    assert resp.status_code == 200
    assert resp.json == {"accepted": 0, "duplicates": 0, "quarantined": 2, "before_cutoff": 0}
    assert counts(bridge) == (0, 2)


def test_new_enum_values_and_unknown_fields_pass(bridge, client):
    order = fixture("order_sale.json")[0]
    order["orderDetailsData"].update(orderState="PARTIALLY_SETTLED", orderType="GIFT_VOUCHER",
                                     futureBlock={"x": 1})
    check = dict(fixture("ticketchecks.json")[0], result="OFFLINE_OK", gate="A-03")
    assert post(client, "orders", order).json["accepted"] == 1
    assert post(client, "ticketchecks", check).json["accepted"] == 1


@pytest.mark.parametrize("record,field", [
    ({"orderDetailsData": {"orderId": "10000815533"}}, "orderId"),
    ({"orderDetailsData": {"orderId": 10000815533, "saleAmount": 12.5}}, "saleAmount"),
    ({"orderDetailsData": {"orderId": 2**64}}, "orderId"),
    ({"orderDetailsData": {"orderId": 1, "contactReference": 42}}, "contactReference"),
])
def test_identifiers_and_amounts_are_strict(bridge, client, record, field):
    resp = post(client, "orders", [record])
    assert resp.json == {"accepted": 0, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    with bridge.engine.connect() as conn:
        assert field in conn.execute(select(QUARANTINE.c.reason)).scalar_one()


BAD_REQUESTS = [
    # (stream, institution, method, body, kwargs, status, words in the message)
    # an unknown institution, a stream not enabled, wrong credentials: one answer, see
    # test_refusals.py for the reason the log gives
    ("orders", "nowhere", "post", b"[]", {}, 401, "not authorized"),
    ("coupons", "testvenue", "post", b"[]", {}, 401, "not authorized"),
    ("orders", "testvenue", "get", None, {}, 405, "method not allowed"),
    ("orders", "testvenue", "put", b"{}", {}, 405, "method not allowed"),
    ("orders", "testvenue", "post", b"{not json", {}, 400, "not valid JSON"),
    ("orders", "testvenue", "post", b"", {}, 400, "empty body"),
    ("orders", "testvenue", "post", b'"a string"', {}, 400, "got str"),
    ("orders", "testvenue", "post", b"42", {}, 400, "got int"),
    ("orders", "testvenue", "post", b"[]", {}, 400, "empty array"),
    ("orders", "testvenue", "post", b'[{"orderDetailsData": {}}, 3]', {}, 400, "element 1"),
    ("contacts", "testvenue", "post", b"[{}]", {"auth": ("s360", "wrong")}, 401,
     "not authorized"),
    ("contacts", "testvenue", "post", b"[{}]", {"auth": None}, 401, "not authorized"),
    ("ticketchecks", "testvenue", "post", b"[{}]", {"headers": {"x-api-key": "nope"}}, 401,
     "not authorized"),
    ("ticketchecks", "testvenue", "post", b"[{}]", {"headers": {}}, 401, "not authorized"),
]


@pytest.mark.parametrize("stream,code,method,body,kwargs,status,words", BAD_REQUESTS)
def test_unusable_requests_are_refused_and_store_nothing(bridge, client, stream, code, method,
                                                         body, kwargs, status, words):
    opts = {"auth": ("s360", PASSWORD)} if stream == "contacts" else {}
    if stream == "ticketchecks":
        opts = {"headers": {"x-api-key": API_KEY}}
    opts.update(kwargs)
    if opts.get("auth") is None:
        opts.pop("auth", None)
    resp = getattr(client, method)(f"/s360/{stream}/{code}", data=body, **opts)
    assert resp.status_code == status
    assert resp.json["status"] == status
    assert words in resp.json["error"]
    assert counts(bridge) == (0, 0)


def test_body_over_the_limit_is_413(bridge, client):
    limit = bridge.settings.engine.max_body_bytes
    resp = post(client, "orders", b"[" + b" " * limit + b"]")
    assert resp.status_code == 413
    assert "larger than" in resp.json["error"]
    assert counts(bridge) == (0, 0)


def test_locked_database_answers_503_and_stores_nothing(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["sqlite_busy_timeout_seconds"] = 0.05
    bridge = bridge_of(write_config(tmp_path, cfg))
    client = create_app(bridge).test_client()
    locker = sqlite3.connect(tmp_path / "engine.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")  # another writer holds the database past the timeout
    try:
        resp = post(client, "orders", fixture("order_sale.json"))
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    book = ledger.Ledger()
    book.answer(2, resp)
    assert resp.status_code == 503
    assert resp.headers["Retry-After"]
    assert counts(bridge) == (0, 0)
    again = post(client, "orders", fixture("order_sale.json"))  # S-360 sends it again
    book.answer(2, again)
    assert again.json["accepted"] == 2
    drain(bridge)
    bridge.close()
    book.settle(f"sqlite:///{tmp_path}/engine.db", "orders",
                lambda: [ledger.journal(tmp_path / "journal.jsonl", "orders")])
    assert book.refused == {503: 2}


def test_allow_list_refuses_other_sources(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["allowed_sources"] = ["192.0.2.0/24"]
    bridge = bridge_of(write_config(tmp_path, cfg))
    client = create_app(bridge).test_client()
    resp = post(client, "orders", fixture("order_sale.json"))
    assert resp.status_code == 403
    ok = post(client, "orders", fixture("order_sale.json"),
              environ_base={"REMOTE_ADDR": "192.0.2.7"})
    assert ok.status_code == 200
    bridge.close()


def test_health(client):
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json == {"status": "ok"}


def test_records_older_than_the_cutoff_are_left_out_and_counted(bridge, client, invoke):
    """The cut-off day starts at midnight in the venue's zone (Zurich: 23:00 UTC the day
    before); zone-less data-export times are local."""
    old, new = fixture("order_sale.json")[:2]
    old = copy.deepcopy(old)
    old["orderDetailsData"]["creationDateTime"] = "2018-12-31T22:59:59.000+00:00"
    new = copy.deepcopy(new)
    new["orderDetailsData"]["creationDateTime"] = "2018-12-31T23:00:00.000+00:00"
    assert post(client, "orders", [old, new]).json == {
        "accepted": 1, "duplicates": 0, "quarantined": 0, "before_cutoff": 1}
    checks = fixture("ticketchecks.json")[:2]
    checks[0]["access_time"] = "2018-12-31 23:59:59"
    checks[1]["access_time"] = "2019-01-01 00:00:00"
    assert post(client, "ticketchecks", checks).json["before_cutoff"] == 1
    contact = fixture("contacts_person.json")[0]  # no update date: always kept
    contact["creationDate"] = "2001-01-01T00:00:00.000+00:00"
    assert post(client, "contacts", [contact]).json["accepted"] == 1
    report = json.loads(invoke("status", "--json").output)["testvenue"]["streams"]
    assert (report["orders"]["before_cutoff"], report["ticketchecks"]["before_cutoff"]) == (1, 1)
    assert "1 older than the history cut-off, left out" in invoke("status").output
    with bridge.engine.connect() as conn:
        keys = {r[0] for r in conn.exec_driver_sql("SELECT record_key FROM inbox")}
    assert str(new["orderDetailsData"]["orderId"]) in keys
    assert str(old["orderDetailsData"]["orderId"]) not in keys


def test_contacts_cutoff_uses_the_configured_update_field(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["streams"]["contacts"]["options"] = {"updated_field": "lastUpdateDate"}
    bridge = bridge_of(write_config(tmp_path, cfg))
    old, new = copy.deepcopy(fixture("contacts_person.json")[:2])
    old["lastUpdateDate"] = "2018-06-01T10:00:00.000+00:00"
    new["lastUpdateDate"] = "2019-06-01T10:00:00.000+00:00"
    answer = post(create_app(bridge).test_client(), "contacts", [old, new]).json
    assert (answer["accepted"], answer["before_cutoff"]) == (1, 1)
    bridge.close()
