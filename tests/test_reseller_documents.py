"""What a reseller gets beside its orders: the settlement of what it sold and was refunded,
checked against S-360's order webhook, and its tickets as PDF (tests/helpers/shop.py)."""

from __future__ import annotations

import json

import pytest

from s360bridge.core.config import load_settings
from s360bridge.core.errors import ConfigError

from .conftest import write_config
from .helpers.shop import LINES

PASS = LINES["open pass"]


def test_settlement_per_day_checked_against_the_order_webhook(shop, runner):
    """Two sales and a partial cancel of eventim: per day, sold and refunded as S-360's
    webhook brought them; a webhook version with another amount is listed as a difference."""
    import datetime as dt

    from s360bridge.core.cli.main import cli
    from s360bridge.core.plugin.manager import Hooks

    event = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": "s1", "lines": [LINES["event"]]}).json()
    shop.reseller("eventim", "POST", "/orders", json={"idempotency_key": "s2", "lines": [PASS]})
    shop.reseller("passhop", "POST", "/orders", json={"idempotency_key": "s3", "lines": [PASS]})
    first = event["tickets"][0]["movement_id"]
    cancel = shop.reseller("eventim", "POST", f"/orders/{event['id']}/cancel",
                           json={"tickets": [first]})
    assert cancel.status_code == 200, cancel.text
    rest = shop.reseller("eventim", "POST", f"/orders/{event['id']}/cancel")  # a second refund
    assert rest.status_code == 200 and rest.json()["state"] == "cancelled", rest.text
    shop.orders_webhook.run_once()  # S-360's order webhook brings the closed orders
    shop.drain()
    today = dt.datetime.now(shop.inst.timezone).date().isoformat()
    r = shop.reseller("eventim", "GET", f"/settlement?from={today}&to={today}").json()
    assert r == {"days": [{"day": today, "currency": "EUR", "sales": 2, "sold": 90000 + 50000,
                           "refunds": 2, "refunded": -90000, "cancelled_tickets": 2}],
                 "differences": []}  # each refund its own ticket and amount
    calls = shop.calls("getOrderDetails")
    past = shop.reseller("eventim", "GET", "/settlement?from=2001-01-01&to=2001-01-31").json()
    assert past == {"days": [], "differences": []}
    assert shop.calls("getOrderDetails") == calls  # nothing of another period is read
    # the webhook brings a version of the event's sale with another amount: listed
    changed = shop.api.order_stores["testvenue"].get(event["order_id"])
    changed["orderDetailsData"]["saleAmount"] = 1
    from .conftest import post

    assert post(shop.client, "orders", changed).json["accepted"] == 1
    csv = shop.reseller("eventim", "GET", f"/settlement?from={today}&to={today}&format=csv")
    assert csv.headers["X-Differences"] == "1"
    assert csv.text.splitlines()[1] == f"{today},EUR,2,140000,2,-90000,2"
    Hooks().add_commands(cli)
    done = runner.invoke(cli, ["resellers", "report", "-c", str(shop.config), "--institution",
                               "testvenue", "--reseller", "eventim", "--from", today, "--to",
                               today])
    assert done.exit_code == 0, done.output
    report = json.loads(done.output)
    assert report["differences"] == [{
        "order_id": event["order_id"], "kind": "sale", "bridge": 90000, "webhook": 1,
        "s360": 90000, "why": "S-360 agrees with the bridge, not with the webhook"}]
    unknown = runner.invoke(cli, ["resellers", "report", "-c", str(shop.config),
                                  "--institution", "testvenue", "--reseller", "nobody",
                                  "--from", today, "--to", today])
    assert unknown.exit_code == 2 and "unknown reseller 'nobody'" in unknown.output


def pdf_text(body: bytes) -> str:
    """The text drawn in a PDF's (compressed) page streams."""
    import base64
    import re
    import zlib

    out = []
    for stream in re.findall(rb"stream\r?\n(.*?)\s*endstream", body, re.S):
        if stream.rstrip().endswith(b"~>"):  # reportlab: ASCII85, then Flate
            stream = base64.a85decode(stream.rstrip(), adobe=True)
        try:
            out.append(zlib.decompress(stream).decode("latin-1"))
        except zlib.error:
            out.append(stream.decode("latin-1"))
    return "".join(out)


@pytest.mark.parametrize("symbology", ["qr", "code128"])
def test_tickets_print_as_pdf_one_page_each_with_the_venues_template(shop, symbology):
    import re

    shop.inst.services["offers"].options["pdf"] = {
        "title": "Theatre of Testvenue", "footer": "Doors open at 19:00",
        "symbology": symbology, "fields": ["product", "performance_id", "price", "holder"]}
    order = shop.reseller("eventim", "POST", "/orders", json={
        "idempotency_key": f"pdf-{symbology}", "lines": [LINES["event"]]}).json()
    whole = shop.reseller("eventim", "GET", f"/orders/{order['id']}/tickets.pdf")
    assert whole.status_code == 200 and whole.headers["Content-Type"] == "application/pdf"
    assert whole.content.startswith(b"%PDF-")
    assert len(re.findall(rb"/Type /Page\b(?!s)", whole.content)) == 2
    text = pdf_text(whole.content)
    for shown in ("Theatre of Testvenue", "Doors open at 19:00", "Price: 45.00 EUR",
                  order["tickets"][0]["barcode"], order["tickets"][1]["barcode"]):
        assert shown in text, shown
    first = order["tickets"][0]["movement_id"]
    one = shop.reseller("eventim", "GET", f"/orders/{order['id']}/tickets/{first}.pdf")
    assert len(re.findall(rb"/Type /Page\b(?!s)", one.content)) == 1
    assert shop.reseller("passhop", "GET", f"/orders/{order['id']}/tickets.pdf").status_code \
        == 404  # another reseller's order
    assert shop.reseller("eventim", "GET", f"/orders/{order['id']}/tickets/1.pdf").status_code \
        == 404
    shop.inst.services["offers"].options["pdf"] = {
        "url": "https://s360.example/print/{order_id}/{movement_id}"}
    moved = shop.reseller("eventim", "GET", f"/orders/{order['id']}/tickets/{first}.pdf",
                          allow_redirects=False)
    assert (moved.status_code, moved.headers["Location"]) == (
        302, f"https://s360.example/print/{order['order_id']}/{first}")
    shop.inst.services["offers"].options["pdf"] = {}
    assert shop.reseller("eventim", "POST", f"/orders/{order['id']}/cancel").status_code == 200
    gone = shop.reseller("eventim", "GET", f"/orders/{order['id']}/tickets.pdf")
    assert gone.status_code == 409 and "no ticket left to print" in gone.text


@pytest.mark.parametrize("template, message", [
    ({"url": "https://s360.example/{lang}/{order_id}"}, "pdf.url: only {order_id}"),
    ({"logo": "/nowhere/logo.png"}, "pdf.logo: no file /nowhere/logo.png")])
def test_a_bad_pdf_template_stops_start_up(shop, tmp_path, template, message):
    import yaml

    from s360bridge.core.bridge import Bridge

    data = yaml.safe_load(shop.config.read_text())
    data["services"]["offers"]["options"]["pdf"] = template
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        Bridge(load_settings([write_config(tmp_path, data, "bad.yaml")]), schema="ignore")
