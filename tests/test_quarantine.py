"""The quarantine keeps what S-360 sent, once: an invalid record's text exactly as received,
one row per distinct content that counts its arrivals; list, show and reprocess with it."""

from __future__ import annotations

import json

from .conftest import base_config, fixture, post, write_config
from .helpers.stored import quarantine_rows, totals

# an order whose amount is not an integer, as S-360 might write it: spaces, 1.10, key order
BAD_ORDER = ('{ "orderDetailsData" : {"saleAmount": 1.10, "orderId": 10000815533,\n'
             '   "note": "caf\\u00e9 \u00e9"} }')


def test_an_invalid_record_is_held_as_received(bridge, client):
    good = json.dumps(fixture("order_sale.json")[0])
    resp = post(client, "orders", f"[{good}, {BAD_ORDER}]".encode())
    assert resp.json == {"accepted": 1, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    [held] = quarantine_rows(bridge)
    assert held["payload"] == BAD_ORDER  # 1.10, the spaces, the escape: as sent
    assert held["count"] == 1 and held["last_seen_at"] == held["received_at"]


def test_a_resend_counts_on_the_same_row(bridge, client, invoke):
    first = post(client, "orders", f"[{BAD_ORDER}]".encode())
    [held] = quarantine_rows(bridge)
    again = post(client, "orders", f"[{BAD_ORDER}, {BAD_ORDER}]".encode())
    assert first.json["quarantined"] == 1 and again.json["quarantined"] == 2
    [resent] = quarantine_rows(bridge)
    assert (resent["id"], resent["count"]) == (held["id"], 3)
    assert resent["received_at"] == held["received_at"]
    assert resent["last_seen_at"] > held["last_seen_at"]
    assert totals(bridge) == (0, 3)
    other = post(client, "orders", BAD_ORDER.replace("1.10", "1.1").encode())
    assert other.json["quarantined"] == 1 and len(quarantine_rows(bridge)) == 2  # another text
    listed = invoke("quarantine", "list").output.splitlines()
    assert listed[0].split()[:3] == [str(held["id"]), "testvenue/orders", "x3"]
    shown = invoke("quarantine", "show", str(held["id"])).output
    assert "received 3 time(s)" in shown and BAD_ORDER in shown


def test_reprocess_takes_the_text_as_received(bridge, client, invoke, tmp_path):
    row = dict(fixture("ticketchecks.json")[0])
    row["scan_id"] = row.pop("ticket_check_id")
    text = json.dumps(row, indent=1)
    assert post(client, "ticketchecks", text.encode()).json["quarantined"] == 1
    assert post(client, "ticketchecks", text.encode()).json["quarantined"] == 1
    assert "still invalid 1" in invoke("quarantine", "reprocess").output
    assert quarantine_rows(bridge)[0]["count"] == 2  # reprocessing is no arrival
    cfg = base_config(tmp_path)
    cfg["streams"]["ticketchecks"]["options"] = {"columns": {"ticket_check_id": "scan_id"}}
    write_config(tmp_path, cfg)
    assert "accepted 1, duplicates 0, still invalid 0" in invoke("quarantine",
                                                                  "reprocess").output
    assert [r["state"] for r in quarantine_rows(bridge)] == ["reprocessed"]


def test_an_import_holds_its_lines_as_read_and_once(bridge, invoke, tmp_path):
    good = json.dumps(fixture("order_sale.json")[0])
    path = tmp_path / "orders.jsonl"
    path.write_text(f"{good}\n{BAD_ORDER.replace(chr(10), ' ')}\nnot json\n", "utf-8")
    for _ in range(2):
        result = invoke("import", "--institution", "testvenue", "--stream", "orders",
                        "--no-deliver", "--again", str(path))
        assert result.exit_code == 0, result.output
        assert "2 quarantined" in result.output
    rows = quarantine_rows(bridge)
    assert sorted((r["payload"], r["count"]) for r in rows) == [
        ("not json", 2), (BAD_ORDER.replace("\n", " "), 2)]
