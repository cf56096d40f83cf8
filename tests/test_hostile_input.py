"""Hostile webhook bodies: whatever valid JSON arrives (deep, large, odd unicode, numbers at
every limit, duplicate keys), the receiver answers 200, 4xx or 503, never 500, and its counts
add up: records sent = accepted + duplicates + quarantined + before_cutoff, and the inbox and
the quarantine hold what the answer says. A record that cannot be stored is quarantined as
received, its neighbours stored."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s360bridge.core.pipeline.receiver import create_app

from .conftest import SECRETS_ENV, base_config, bridge_of, fixture, post, write_config
from .helpers.stored import quarantine_rows, totals

BUDGET = settings(max_examples=40, deadline=2000, derandomize=True,
                  suppress_health_check=[HealthCheck.function_scoped_fixture,
                                         HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """One receiver for the module's examples (a bridge per example would eat the budget)."""
    folder = tmp_path_factory.mktemp("hostile")
    mp = pytest.MonkeyPatch()
    for k, v in SECRETS_ENV.items():
        mp.setenv(k, v)
    bridge = bridge_of(write_config(folder, base_config(folder)))
    yield bridge, create_app(bridge).test_client()
    bridge.close()
    mp.undo()


def nested(depth: int, leaf=1):
    """``depth`` levels of arrays and objects around ``leaf``, built without recursion."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"n": value}
    return value


def text_nested(depth: int) -> str:
    """The JSON text of ``depth`` levels, written out (Python's json would recurse too deep)."""
    return '{"n":' * depth + "1" + "}" * depth


def valid_check(check_id: int, **more: str) -> str:
    """A valid ticket check's text, with fields written out as given (any JSON text)."""
    good = json.dumps(dict(fixture("ticketchecks.json")[0], ticket_check_id=check_id))
    return good[:-1] + "".join(f', "{k}": {v}' for k, v in more.items()) + "}"


# every JSON scalar at its limits: huge and tiny numbers, long and odd strings
NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=2**63 - 2, max_value=2**63 + 2),
    st.integers(min_value=-2**64 - 2, max_value=-2**63 + 2), st.integers(min_value=10**300),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["1e308", "-1e308", "1e400", "-1e400", "5e-324", "1e-400", "1.10",
                     "0.000000000000000000001", "123456789012345678901234567890"]))
STRINGS = st.one_of(
    st.text(), st.text(alphabet=st.characters(codec="utf-8"), min_size=1000, max_size=5000),
    st.sampled_from(["\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u0000", "\\uffff", "\ufeff",
                     "\U0010ffff", "\\\\", "\\\""]))


def scalar_text(draw) -> str:
    kind = draw(st.sampled_from(["number", "string", "literal"]))
    if kind == "number":
        n = draw(NUMBERS)
        return n if isinstance(n, str) else json.dumps(n)
    if kind == "literal":
        return draw(st.sampled_from(["true", "false", "null"]))
    s = draw(STRINGS)
    escaped = s.startswith("\\") and len(s) < 20  # written as JSON escapes already
    return f'"{s}"' if escaped else json.dumps(s, ensure_ascii=draw(st.booleans()))


@st.composite
def hostile_record(draw) -> str:
    """The JSON text of one object: a good record spoilt, or one made of odd parts."""
    kind = draw(st.sampled_from(["good", "deep", "odd", "duplicate keys", "spoilt"]))
    if kind == "good":
        return json.dumps(draw(st.sampled_from(fixture("ticketchecks.json"))))
    if kind == "deep":  # alone, or in a field a valid record may carry
        deep = text_nested(draw(st.sampled_from([200, 253, 254, 255, 256, 800, 1023, 1024,
                                                 1025, 3000])))
        good = json.dumps(draw(st.sampled_from(fixture("ticketchecks.json"))))
        return draw(st.sampled_from([deep, good[:-1] + f', "gate": {deep}}}']))
    if kind == "duplicate keys":
        return '{"ticket_check_id": 1, "ticket_check_id": ' + scalar_text(draw) + "}"
    if kind == "spoilt":
        good = json.dumps(draw(st.sampled_from(fixture("ticketchecks.json"))))
        field = draw(st.sampled_from(["ticket_check_id", "barcode", "access_time", "x"]))
        return good[:-1] + f', "{field}": {scalar_text(draw)}}}'
    keys = draw(st.lists(st.text(), max_size=5))
    return "{" + ", ".join(f"{json.dumps(k)}: {scalar_text(draw)}" for k in keys) + "}"


@settings(BUDGET)
@given(st.lists(hostile_record(), min_size=1, max_size=6), st.booleans())
def test_hostile_bodies_never_make_a_500_and_the_counts_add_up(hostile, records, spaced):
    bridge, client = hostile
    body = (",\n  " if spaced else ",").join(records)
    before = totals(bridge)
    resp = post(client, "ticketchecks", f"[{body}]".encode())
    assert resp.status_code == 200 or 400 <= resp.status_code < 500 \
        or resp.status_code == 503, resp.get_data(as_text=True)[:500]
    after = totals(bridge)
    if resp.status_code != 200:
        assert after == before  # refused: nothing stored
        return
    answer = resp.json
    assert sum(answer.values()) == len(records)
    assert after == (before[0] + answer["accepted"], before[1] + answer["quarantined"])


@pytest.mark.parametrize("depth", [254, 255, 600, 1023, 1024, 5000])
def test_a_deep_record_is_quarantined_as_received_and_its_neighbours_stored(bridge, client,
                                                                           invoke, depth):
    deep = valid_check(3, gate=text_nested(depth))  # valid: a check may carry more fields
    body = f"[{valid_check(1)},\n {deep}, {valid_check(2)}]"
    resp = post(client, "ticketchecks", body.encode())
    assert resp.status_code == 200
    assert resp.json == {"accepted": 2, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    [held] = quarantine_rows(bridge)
    assert held["payload"] == deep
    assert any(limit in held["reason"].lower() for limit in ("recursion limit", "depth limit"))
    shown = invoke("quarantine", "show", str(held["id"]))
    assert shown.exit_code == 0, shown.output
    assert deep in shown.output


@pytest.mark.parametrize("text,reason", [
    ('{"ticket_check_id": 1e400}', "infinity"),
    ('{"ticket_check_id": "\\ud800"}', "surrogate"),
    ('{"ticket_check_id": 1,}', "not parsed"),
])
def test_a_record_that_does_not_parse_alone_is_quarantined_not_the_body(bridge, client, text,
                                                                         reason):
    good = fixture("ticketchecks.json")[0]
    resp = post(client, "ticketchecks", f"[{json.dumps(good)},{text}]".encode())
    assert resp.json == {"accepted": 1, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    [held] = quarantine_rows(bridge)
    assert held["payload"] == text and reason in held["reason"]


def test_a_key_the_database_cannot_hold_is_quarantined(bridge, client):
    contact = fixture("contacts_person.json")[0]
    bad = dict(contact, contactNumber="12\u000034")
    resp = post(client, "contacts", [contact, bad])
    assert resp.json == {"accepted": 1, "duplicates": 0, "quarantined": 1, "before_cutoff": 0}
    assert "NUL" in quarantine_rows(bridge)[0]["reason"]


@pytest.mark.parametrize("body", [b"[{}", b"[1, {}]", b'{"a": 1} {"b": 2}', b"[{},]",
                                  b"\xff\xfe[{}]", b"[" * 2000])
def test_a_body_that_is_not_an_array_of_objects_is_still_400(bridge, client, body):
    resp = post(client, "orders", body)
    assert resp.status_code == 400
    assert totals(bridge) == (0, 0)


def test_large_bodies_over_the_limit_are_413(tmp_path, secrets_env):
    cfg = base_config(tmp_path)
    cfg["engine"]["max_body_bytes"] = 10_000
    bridge = bridge_of(write_config(tmp_path, cfg))
    try:
        client = create_app(bridge).test_client()
        resp = post(client, "orders", b"[" + b'{"a": 1},' * 2000 + b"{}]")
        assert resp.status_code == 413
        assert totals(bridge) == (0, 0)
    finally:
        bridge.close()
