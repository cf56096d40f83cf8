"""The S-360 API client and the simulator's API checks: tokens, envelopes, errors, mappings."""

from __future__ import annotations

import time

import jwt
import pytest

from s360bridge.core.config import S360ApiSettings, Secret
from s360bridge.core.connectors.mapping import Mapping
from s360bridge.core.errors import ConfigError
from s360bridge.core.s360.budget import CallBudget
from s360bridge.core.s360.client import (
    S360ApiError,
    S360AuthError,
    S360BusinessError,
    S360Client,
    S360Unavailable,
    S360Uncertain,
    mint_token,
)
from s360bridge.core.storage import migrate
from s360bridge.core.storage.db import make_engine
from s360bridge.simulator.api import ApiAccess, S360Api
from s360bridge.simulator.serving import Served

SECRET = "partner-shared-secret-for-the-tests-0123456"
SERVICE = "contactInformationPublicService"


def settings(url: str, **kw) -> S360ApiSettings:
    return S360ApiSettings(**{"base_url": url, "operator": "OP", "partner": "tests",
                              "secret": Secret("SIM_SECRET", SECRET), "retries": 1,
                              "window_seconds": 1.0, "calls_per_minute": 50, **kw})


@pytest.fixture
def engine(tmp_path):
    e = make_engine(f"sqlite:///{tmp_path}/engine.db")
    migrate.upgrade(e, [])  # the call log is in the engine's branch
    return e


@pytest.fixture
def sim():
    api = S360Api({"venue": ApiAccess(SECRET, frozenset({"OP"}), 50, 1.0)})
    with Served(api.app()) as served:
        yield api, served.url


def client(engine, url, **kw) -> S360Client:
    s = settings(f"{url}/venue", **kw)
    return S360Client("venue", s, CallBudget(engine, s.calls_per_minute, s.window_seconds),
                      sleep=lambda _: None)


def test_token_claims_follow_the_reference():
    now = 1_700_000_000.4
    claims = jwt.decode(mint_token(settings("http://x"), "MOSA", now), SECRET,
                        algorithms=["HS256"], audience="OP",
                        options={"verify_exp": False, "verify_iat": False})
    assert claims == {"sub": "MOSA", "aud": "OP", "iss": "tests", "iat": 1_700_000_000,
                      "exp": 1_700_000_030}
    ms = jwt.decode(mint_token(settings("http://x", iat_unit="milliseconds"), "MOSA", now),
                    SECRET, algorithms=["HS256"], audience="OP",
                    options={"verify_exp": False, "verify_iat": False})
    assert ms["iat"] == 1_700_000_000_400


@pytest.mark.parametrize("change, why", [
    ({"secret": "another-secret-of-somebody-else-000000"}, "invalid token"),
    ({"sub": "other"}, "another institution"),
    ({"aud": "NOBODY"}, "unknown operator"),
    ({"iss": "somebody else"}, "unknown partner"),
    ({"iat": -30}, "stale"),
    ({"iat": +30}, "future"),
    ({"exp": -1}, "expired"),
])
def test_simulator_refuses_bad_tokens(sim, change, why):
    api, _ = sim
    now = time.time()
    claims = {"sub": "venue", "aud": "OP", "iss": "tests", "iat": int(now), "exp": int(now) + 30}
    for k in ("iat", "exp"):
        if k in change:
            claims[k] = int(now) + change[k]
    claims |= {k: v for k, v in change.items() if k in ("sub", "aud", "iss")}
    token = jwt.encode(claims, change.get("secret", SECRET), algorithm="HS256")
    assert why in api.check_token("venue", f"Bearer {token}", now)
    assert api.check_token("venue", f"Bearer {mint_token(settings('x'), 'venue', now)}",
                           now) is None


def test_calls_answer_the_result_and_business_errors_are_typed(engine, sim):
    api, url = sim
    c = client(engine, url)
    made = c.call(SERVICE, "createCulturalContact", {"contactDataList": [
        {"identifier": 7, "firstName": "Lena", "lastName": "Keller", "email": "l@k.ch"}]})
    number = made["identifierContactMap"]["7"]
    assert c.call(SERVICE, "getContactData", {"contactNumber": number})["contactNumber"] == number
    with pytest.raises(S360BusinessError) as err:
        c.call(SERVICE, "getContactData", {"contactNumber": "404"})
    assert "error.contact.notFound" in str(err.value)
    assert api.count("getContactData") == 2  # a business error is not retried


def test_wrong_secret_is_an_auth_error_without_the_secret(engine, sim):
    api, url = sim
    c = client(engine, url, secret=Secret("SIM_SECRET", "not-the-right-one-xxxxxxxxxxxxxxxx"))
    with pytest.raises(S360AuthError) as err:
        c.call(SERVICE, "getContactData", {"contactNumber": "1"})
    assert "$SIM_SECRET" in str(err.value) and "not-the-right-one" not in str(err.value)
    assert api.count(status=401) == 1  # refused credentials are not retried


def test_unreachable_s360_is_retried_then_unavailable(engine):
    c = client(engine, "http://127.0.0.1:9", timeout_seconds=0.5)
    with pytest.raises(S360Unavailable):
        c.call(SERVICE, "getContactData", {"contactNumber": "1"})
    assert c.stats["getContactData", "unreachable"] == 2  # the call and one retry


ORDER = "externalOrderFacade"


def test_a_timed_out_order_call_is_never_made_again(engine, sim):
    """S-360 slow to answer a sales call (it does the work, then answers after the client's
    timeout): the call is made once and is uncertain; a read is retried as before."""
    api, url = sim
    api.slow["createOrUpdateOrder"] = api.slow["getContactData"] = 0.6
    c = client(engine, url, timeout_seconds=0.2)
    with pytest.raises(S360Uncertain, match="read before anything else is sent"):
        c.call(ORDER, "createOrUpdateOrder", {"pointOfSalesId": 1, "orderType": "SALE"})
    assert api.count("createOrUpdateOrder") == 1
    with pytest.raises(S360Unavailable):
        c.call(SERVICE, "getContactData", {"contactNumber": "1"})
    assert api.count("getContactData") == 2  # the call and one retry


def test_an_order_call_is_made_again_where_s360_certainly_did_nothing(engine, sim):
    """A 509 and a refused connection leave nothing done in S-360: made again."""
    api, url = sim
    api.force_509 = 1
    with pytest.raises(S360BusinessError):  # an empty order, refused once it gets through
        client(engine, url).call(ORDER, "createOrUpdateOrder", {"pointOfSalesId": 1})
    assert (api.count("createOrUpdateOrder", 509), api.count("createOrUpdateOrder", 200)) \
        == (1, 1)
    refused = client(engine, "http://127.0.0.1:9", timeout_seconds=0.5)
    with pytest.raises(S360Unavailable) as err:
        refused.call(ORDER, "createOrUpdateOrder", {"pointOfSalesId": 1})
    assert not isinstance(err.value, S360Uncertain)
    assert refused.stats["createOrUpdateOrder", "unreachable"] == 2


def test_a_monthly_quota_keeps_its_last_calls_for_sales(engine, sim, tmp_path):
    """3 calls a month, the last 1 kept for sales: two availability reads, then a third is
    refused before it is sent, a sale still goes, and then nothing (and status says so)."""
    from s360bridge.core.s360.client import S360QuotaSpent
    from s360bridge.core.s360.quota import left

    api, url = sim
    c = client(engine, url, monthly_calls=3, monthly_reserve_for_sales=1)
    availability = {"pointOfSalesId": 1, "performanceIds": [1], "seatCategoryIds": [-1]}
    for _ in range(2):  # sent and counted, whatever the simulator answers
        with pytest.raises(S360BusinessError):
            c.call("availabilityService", "getEventAvailability", availability)
    with pytest.raises(S360QuotaSpent, match="the last 1 calls of .* are kept for sales"):
        c.call("availabilityService", "getEventAvailability", availability)
    with pytest.raises(S360BusinessError):  # sent (and counted): the simulator refuses it
        c.call(ORDER, "createOrUpdateOrder", {"pointOfSalesId": 1})
    with pytest.raises(S360QuotaSpent, match="calls of .* are spent"):
        c.call(ORDER, "createOrUpdateOrder", {"pointOfSalesId": 1})
    assert (api.count("getEventAvailability"), api.count("createOrUpdateOrder")) == (2, 1)
    assert left(engine, "venue", time.time(), 3) == 0
    down = client(engine, "http://127.0.0.1:9", timeout_seconds=0.5, monthly_calls=5)
    with pytest.raises(S360Unavailable):  # no connection: the tries are given back
        down.call(SERVICE, "getContactData", {"contactNumber": "1"})
    assert left(engine, "venue", time.time(), 5) == 2  # the 3 calls made above, only


def test_a_wrong_version_is_a_clear_error(engine, sim):
    _, url = sim
    c = client(engine, url, versions={SERVICE: "v1_0"})
    with pytest.raises(S360ApiError, match="check s360_api.base_url and versions"):
        c.call(SERVICE, "getContactData", {"contactNumber": "1"})


def test_mapping_paths_constants_lists_and_conversions():
    m = Mapping({"id": "o.orderId", "src": {"const": "s360"},
                 "total": {"path": "o.saleAmount", "convert": "amount"},
                 "total3": {"path": "o.saleAmount", "convert": "amount", "digits": 3},
                 "day": {"path": "o.created", "convert": "date", "format": "%Y-%m-%d %H:%M",
                         "timezone": "Europe/Zurich"},
                 "who.email": {"path": "o.email", "convert": "lower"},
                 "first_line": "o.lines.0.code",
                 "lines": {"each": "o.lines", "mapping": {"code": "code"}}})
    record = {"o": {"orderId": 10000702652, "saleAmount": 45005, "email": "A@B.CH",
                    "created": "2024-03-01T09:13:02.001+00:00",
                    "lines": [{"code": "X"}, {"code": "Y"}]}}
    assert m.apply(record) == {
        "id": 10000702652, "src": "s360", "total": "45.00", "total3": "45.005",
        "day": "2024-03-01 10:13", "who": {"email": "a@b.ch"}, "first_line": "X",
        "lines": [{"code": "X"}, {"code": "Y"}]}
    assert m.apply({"o": {}}, drop_missing=True) == {"src": "s360", "lines": []}
    with pytest.raises(ValueError, match="total: amount"):
        m.apply({"o": {"saleAmount": 45.5}})


@pytest.mark.parametrize("spec, message", [
    ({}, "expected a mapping"),
    ({"a": {"path": "x", "convert": "float"}}, "unknown conversion 'float'"),
    ({"a": {"const": 1, "path": "x"}}, "unexpected path"),
    ({"a": 3}, "a rule is a path"),
    ({"a": {"convert": "lower"}}, "needs a path"),
])
def test_bad_mappings_are_refused_with_the_field(spec, message):
    with pytest.raises(ConfigError, match=message):
        Mapping(spec)
