"""S-360's simulated sales API called the way a partner calls it, for the simulator's own tests
(tests/test_simulator_sales.py, tests/test_simulator_channels.py)."""

from __future__ import annotations

import time
from contextlib import contextmanager

import jwt
import requests

from s360bridge.simulator.api import ApiAccess, S360Api
from s360bridge.simulator.catalog import PENDING_ACCOUNT, POS_ID
from s360bridge.simulator.serving import Served

SECRET = "partner-shared-secret-for-the-sales-tests-01"
PERF, CAT2, PASS_ITEM = 10228231109243, 302, 10228231108401
SEATS, PASSES = ("seats", PERF, CAT2), ("item", PASS_ITEM)
ADULT = 1


class Sim:
    """The simulator's API for one institution, called the way a partner calls S-360."""

    def __init__(self, api: S360Api, url: str):
        self.api, self.url = api, url
        self.sales = api.sales["venue"]
        self.closed: list[dict] = []  # what goes to the order webhook
        self.sales.on_close = lambda record: self.closed.append(record["orderDetailsData"])

    def post(self, service: str, method: str, body: dict, iss: str = "tests", aud: str = "OP"):
        now = int(time.time())
        token = jwt.encode({"sub": "venue", "aud": aud, "iss": iss, "iat": now,
                            "exp": now + 30}, SECRET, algorithm="HS256")
        return requests.post(f"{self.url}/venue/tnseb/backend-apis/{service}/v1_33/{method}",
                             json=body, headers={"Authorization": f"Bearer {token}"},
                             timeout=10)

    def call(self, method: str, body: dict) -> dict:
        service = "externalOrderFacade" if method == "createOrUpdateOrder" \
            else "externalOrderService"
        r = self.post(service, method, body)
        assert r.status_code == 200, r.text
        return r.json()

    def ok(self, method: str, body: dict) -> dict:
        answer = self.call(method, body)
        assert answer["statusCode"] == "success", answer
        return answer

    def refused(self, method: str, body: dict, detail: str) -> None:
        answer = self.call(method, body)
        assert answer["statusCode"] == "failed" and detail in answer["statusDetail"], answer

    def left(self, quota: tuple) -> int:
        return self.api.catalogs["venue"].left[quota]

    def order(self, seats: int = 3, passes: int = 2, **extra) -> dict:
        """An open sale of ``seats`` HAMLET seats and ``passes`` open passes."""
        body = {"pointOfSalesId": POS_ID, "orderType": "SALE", **extra,
                "singleEntryAttributionOperations": {"operationAttributions": [
                    {"performanceId": PERF, "seatCategoryId": CAT2,
                     "audienceSubCategoryId": ADULT, "quantity": seats}]}}
        if passes:
            body["simpleProductOperations"] = [{"itemId": PASS_ITEM,
                                                "audienceSubCategoryId": ADULT,
                                                "quantity": passes}]
        return self.ok("createOrUpdateOrder", body)["orderUpdateData"]

    def details(self, order_id: int) -> dict:
        return self.ok("getOrderDetails", {"orderId": order_id})["orderDetailsData"]

    def sold(self, seats: int = 3, passes: int = 2) -> dict:
        """A closed sale; answers its details."""
        made = self.order(seats, passes)
        self.ok("createPaymentsAndCloseOrder", {"orderId": made["orderId"], "payments": [
            {"amount": made["totalAmount"], "paymentMethodId": PENDING_ACCOUNT}]})
        return self.details(made["orderId"])


@contextmanager
def served_sim(**access):
    """One institution, ``venue``, its API served on loopback."""
    api = S360Api({"venue": ApiAccess(SECRET, frozenset({"OP"}), 1000, 60.0, **access)})
    with Served(api.app()) as served:
        yield Sim(api, served.url)
