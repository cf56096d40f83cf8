"""S-360's sales side (ExternalOrderFacade, ExternalOrderService v1_33): open orders that hold
places and expire, closing with or without a pending-account payment, reservations and options
resumed as sales or released, files read back, barcodes, and ticket holders (REFERENCE §h);
movements abandoned and refunds (once each) are removals.py's. What S-360 refuses is refused
with a business error; each such rule is tagged with its REFERENCE fact.

Closed and abandoned orders go to ``on_close``, which the simulator wires to its order webhook.
INFERRED shapes kept here: the open order state ``OPEN``, ``timeslotId`` on a simple-product
operation, ``barcode`` on movements, and the ``setMovementContactData`` body.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable

from . import order_lines
from .catalog import CURRENCY, Catalog, _iso
from .channels import Channel, current
from .contacts import BusinessError
from .order import Order
from .orders import OrderStore, get_file_details, get_order_details
from .removals import Removals

KINDS = ("SALE", "RESERVATION", "OPTION", "RESERVATION_FREEING", "OPTION_FREEING")
AMOUNT_FIELD = {"SALE": "saleAmount", "RESERVATION": "reservationAmount",
                "OPTION": "optionAmount"}


class Sales(Removals):
    def __init__(self, catalog: Catalog, orders: OrderStore, open_seconds: float = 1200,
                 clock: Callable[[], float] = time.time):
        self.catalog, self.orders_store = catalog, orders
        self.open_seconds, self.clock = open_seconds, clock
        self.orders: dict[int, Order] = {}
        self.on_close: Callable[[dict], None] = lambda record: None
        self._ids = itertools.count(10000900000)
        self._rnd = random.Random(7)
        self._lock = threading.RLock()

    # -- bookkeeping -------------------------------------------------------------------------
    def _record(self, o: Order) -> dict:
        def t(seconds: float) -> str:
            return _iso(dt.datetime.fromtimestamp(seconds, dt.UTC))
        amounts = dict.fromkeys(("saleAmount", "preSaleAmount", "reservationAmount",
                                 "optionAmount", "waitingAccountBalanceAmount"), 0)
        amounts[AMOUNT_FIELD.get(o.type, "saleAmount")] = o.total
        return {"orderDetailsData": {
            "orderId": o.id, "orderType": o.type, "orderState": o.state,
            "creationDateTime": t(o.created), "expirationDate": t(o.expires), **amounts,
            "catalogCurrency": CURRENCY, "contactReference": o.purchaser,
            "salesChannelCode": o.channel, "operationDatas": o.lines,
            "movementDatas": o.movements}}

    def _save(self, o: Order, finished: bool = False) -> None:
        record = self._record(o)
        at = _iso(dt.datetime.fromtimestamp(self.clock(), dt.UTC))
        self.orders_store.add([record], file_id=o.file_id, at=at)
        if finished:
            self.on_close(record)

    def expire(self) -> None:
        """Open orders past their expiry are abandoned and give their places back."""
        now = self.clock()
        with self._lock:
            for o in list(self.orders.values()):
                if o.state == "OPEN" and o.expires <= now:
                    self._abandon(o)

    def _abandon(self, o: Order) -> None:
        source = self.orders.get(o.resumes) if o.resumes is not None else None
        if source is not None:
            # [INFERRED h.5] a sale resuming a reservation or option, abandoned before it
            # closed, leaves it as it was: the reservation holds its places again, and it
            # can still be resumed or freed
            source.resumed = False
            if source.type == "RESERVATION":
                source.held.update(o.held)
                o.held.clear()
        self.catalog.give_back(o.held)
        o.held.clear()
        o.state = "ABANDONED"
        self._save(o, finished=True)

    @staticmethod
    def _mine(o: Order) -> None:
        """[INFERRED] an operator changes the orders of its own sales channel only."""
        if o.channel != current().code:
            raise BusinessError("failed", f"error.order.otherSalesChannel: {o.id} was made on "
                                          f"{o.channel}")

    def open_order(self, order_id) -> Order:
        o = self.orders.get(order_id)
        if o is None:
            raise BusinessError("failed", f"error.order.notFound: {order_id}")
        self._mine(o)
        if o.state != "OPEN":
            raise BusinessError("failed", f"error.order.notOpen: {order_id} is {o.state}")
        return o

    def _lines(self, body: dict, channel: Channel | None = None) -> tuple[list[dict], Counter]:
        return order_lines.lines_of(self.catalog, body, channel)

    def _add(self, o: Order, lines: list[dict], wanted: Counter, take: bool) -> None:
        if take:
            self.catalog.take(wanted)
            o.held.update(wanted)
        for line in lines:
            line["operationId"] = next(self._ids)
            line["fileId"] = o.file_id
            o.lines.append(line)
            for _ in range(line["quantity"]):
                o.movements.append({"movementId": next(self._ids),
                                    "operationId": line["operationId"], "barcode": None,
                                    "contactNumber": None})

    # -- methods -----------------------------------------------------------------------------
    def create_or_update(self, body: dict) -> dict:
        self.expire()
        kind = body.get("orderType", "SALE")
        current().check_pos(body)  # [FOUND h.2] mandatory, the one getPOSConfig gives
        if kind not in KINDS:
            raise BusinessError("failed", f"error.parameter.invalid: orderType {kind}")
        options = set(body.get("orderCreationOptions") or [])
        with self._lock:
            if body.get("orderId"):
                o = self.open_order(body["orderId"])
            else:
                now = self.clock()
                purchaser = ((body.get("purchasersInfo") or [{}])[0]).get("contactReference")
                o = Order(next(self._ids), body.get("fileId") or next(self._ids), kind,
                          purchaser, now, now + self.open_seconds, channel=current().code)
            source = self._file_order(body.get("fileId"), options, kind)
            if source is not None:  # resume a reservation/option as a sale, or free it
                lines = [{k: v for k, v in line.items() if k not in ("operationId",)}
                         for line in source.lines]
                if kind.endswith("_FREEING"):
                    o.lines, o.held = [], Counter()
                    o.release_from = source.id
                else:
                    wanted = Counter(source.held)
                    take = source.type == "OPTION"  # an option held nothing
                    if take:
                        wanted = self._lines_quota(source)
                    else:
                        o.held.update(source.held)
                        source.held.clear()
                    o.resumes = source.id
                    self._add(o, lines, wanted, take)
            else:
                lines, wanted = self._lines(body, current())
                if not lines:
                    raise BusinessError("failed", "error.order.empty")
                self._add(o, lines, wanted, take=kind in ("SALE", "RESERVATION"))
            self.orders[o.id] = o
            self._save(o)
        return {"orderUpdateData": {
            "orderId": o.id, "orderSecretId": f"S{o.id:X}", "totalAmount": o.total,
            "catalogCurrency": CURRENCY, "expirationDate": self._record(o)[
                "orderDetailsData"]["expirationDate"],
            "operationDataUpdates": [{"operationId": line["operationId"],
                                      "fileId": o.file_id} for line in o.lines],
            "movementDataUpdates": [{"movementId": m["movementId"]} for m in o.movements],
            "generatedContactQualities": []}}

    def _lines_quota(self, o: Order) -> Counter:
        _, wanted = self._lines(order_lines.as_body(o.lines))
        return wanted

    def _file_order(self, file_id, options: set, kind: str) -> Order | None:
        resume = {"RESUME_ALL_RESERVATION_OPERATIONS": "RESERVATION",
                  "RESUME_ALL_OPTION_OPERATIONS": "OPTION"}
        wanted = {resume[x] for x in options if x in resume}
        if kind.endswith("_FREEING"):
            wanted = {kind.removesuffix("_FREEING")}
        if not wanted or file_id is None:
            return None
        for o in self.orders.values():
            if o.file_id == file_id and o.type in wanted and o.state == "CLOSED" \
                    and not o.resumed:
                self._mine(o)
                o.resumed = True
                return o
        raise BusinessError("failed", f"error.file.nothingToResume: {file_id}")

    def close(self, body: dict, paid: int | None = None) -> dict:
        self.expire()
        with self._lock:
            o = self.open_order(body.get("orderId"))
            if paid is not None and paid != o.total:
                raise BusinessError("failed", f"error.payment.amount: {paid} != {o.total}")
            if o.type == "SALE" and body.get("generateBarCodes", True):
                for m in o.movements:
                    m["barcode"] = f"0{self._rnd.randint(10**22, 10**23 - 1)}"
            if o.release_from is not None:
                source = self.orders[o.release_from]
                self.catalog.give_back(source.held)
                source.held.clear()
            o.state = "CLOSED"
            self._save(o, finished=True)
            return {"orderData": self._record(o)["orderDetailsData"]}

    def pay_and_close(self, body: dict) -> dict:
        payments = body.get("payments") or []
        methods = {m["id"] for m in current().payment_methods()}
        if any(p.get("paymentMethodId") not in methods for p in payments):
            raise BusinessError("failed", "error.payment.unknownMethod")
        return self.close(body, paid=sum(int(p.get("amount", 0)) for p in payments))

    def set_holders(self, body: dict) -> dict:
        with self._lock:
            o = self.orders.get(body.get("orderId"))
            if o is None:
                raise BusinessError("failed", f"error.order.notFound: {body.get('orderId')}")
            self._mine(o)
            by_id = {m["movementId"]: m for m in o.movements}
            for item in body.get("movementContactDatas") or []:
                movement = by_id.get(item.get("movementId"))
                if movement is None:
                    raise BusinessError("failed", "error.movement.notFound: "
                                                  f"{item.get('movementId')}")
                movement["contactNumber"] = item.get("contactNumber")
            self._save(o)
        return {}

    def file_details(self, body: dict) -> dict:
        """[FOUND-CODE h.4 K3] ``getFileDetails``: open orders past their expiry are abandoned
        first, as S-360 would show them."""
        self.expire()
        return get_file_details(self.orders_store, body)


FACADE = {"createOrUpdateOrder": lambda s, b: s.create_or_update(b)}
SERVICE = {
    "closeOrder": lambda s, b: s.close(b),
    "createPaymentsAndCloseOrder": lambda s, b: s.pay_and_close(b),
    "setMovementContactData": lambda s, b: s.set_holders(b),
    "abandonMovements": lambda s, b: s.abandon(b),
    "cancelOperations": lambda s, b: s.cancel(b),
    "getOrderDetails": lambda s, b: get_order_details(s.orders_store, b),
    "getFileDetails": lambda s, b: s.file_details(b),
}
