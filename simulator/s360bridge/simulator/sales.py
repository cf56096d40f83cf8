"""S-360's sales side (ExternalOrderFacade, ExternalOrderService v1_33): open orders that hold
places and expire, closing with or without a pending-account payment, reservations and options
resumed as sales or released, movements abandoned, refunds (once each), files read back,
barcodes, and ticket holders (REFERENCE §h). What S-360 refuses is refused with a business
error; each such rule is tagged with its REFERENCE fact.

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
from dataclasses import dataclass, field

from . import order_lines
from .catalog import CURRENCY, Catalog, _iso
from .channels import Channel, current
from .contacts import BusinessError
from .orders import OrderStore, get_file_details, get_order_details

KINDS = ("SALE", "RESERVATION", "OPTION", "RESERVATION_FREEING", "OPTION_FREEING")
AMOUNT_FIELD = {"SALE": "saleAmount", "RESERVATION": "reservationAmount",
                "OPTION": "optionAmount"}


@dataclass
class Order:
    id: int
    file_id: int
    type: str
    purchaser: str | None
    created: float
    expires: float
    state: str = "OPEN"  # INFERRED for an order not closed yet
    lines: list[dict] = field(default_factory=list)
    held: Counter = field(default_factory=Counter)  # quota key -> places
    movements: list[dict] = field(default_factory=list)
    release_from: int | None = None  # a *_FREEING order: the order whose places it frees
    resumed: bool = False  # a reservation or option already turned into a sale or freed
    resumes: int | None = None  # a sale resuming a reservation or option: that order
    refunded: set = field(default_factory=set)  # movement ids a cancelOperations refunded
    channel: str = "RESAPI"  # the code of the sales channel it was made on

    @property
    def total(self) -> int:
        return sum(line["totalAmount"] for line in self.lines)


class Sales:
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
        _, wanted = self._lines(_as_body(o.lines))
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

    def _unit_quota(self, o: Order, movement: dict) -> Counter:
        """The places one movement holds: one unit of its line's quotas, as far as ``o``
        still holds them (an option holds none)."""
        line = next(x for x in o.lines if x["operationId"] == movement["operationId"])
        _, wanted = self._lines(_as_body([{**line, "quantity": 1}]))
        return wanted & o.held

    def _release(self, o: Order, movements: list[dict]) -> None:
        """Give back the places of ``movements`` of ``o``."""
        for m in movements:
            places = self._unit_quota(o, m)
            self.catalog.give_back(places)
            o.held -= places

    def abandon(self, body: dict) -> dict:
        """Some movements leave an open order and give back their places; an order left with
        none is abandoned (REFERENCE h.4: ``abandonMovements(orderId, movementIds)`` "removes
        items from an open order")."""
        with self._lock:
            o = self.open_order(body.get("orderId"))
            # [FOUND h.4] the movements to remove are named: without them nothing is removed
            ids = _id_list(body, "movementIds", required=True)
            gone = _pick(o.movements, ids, "movementId", "error.movement.notFound")
            if len(gone) == len(o.movements):
                self._abandon(o)  # nothing left: the order is abandoned as a whole
                return {}
            self._release(o, gone)
            o.movements = [m for m in o.movements if m["movementId"] not in ids]
            left = Counter(m["operationId"] for m in o.movements)
            # the lines keep as many units as they have movements left (REFERENCE c.2)
            o.lines = [{**x, "quantity": left[x["operationId"]],
                        "totalAmount": left[x["operationId"]] * x["unitPrice"]}
                       for x in o.lines if left[x["operationId"]]]
            self._save(o)
        return {}

    def cancel(self, body: dict) -> dict:
        """A closed sale, or some of its movements, refunded once: a REFUND_CLIENT order on its
        file holds their lines and gives their places back (REFERENCE h.4 K3:
        ``cancelOperations {orderId, operationIds, movementIds}``)."""
        with self._lock:
            o = self.orders.get(body.get("orderId"))
            if o is None or o.state != "CLOSED" or o.type != "SALE":
                raise BusinessError("failed", f"error.order.notCancellable: "
                                              f"{body.get('orderId')}")
            self._mine(o)
            # [FOUND-CODE h.4 K3] operationIds and movementIds choose what is cancelled: the
            # movements named and those of the operations named; none named: all of them
            movement_ids = _id_list(body, "movementIds")
            operation_ids = _id_list(body, "operationIds")
            if movement_ids is None and operation_ids is None:
                chosen = [m for m in o.movements if m["movementId"] not in o.refunded]
                if not chosen:
                    raise BusinessError("failed", f"error.order.alreadyRefunded: {o.id}")
            else:
                chosen = _pick(o.movements, movement_ids or [], "movementId",
                               "error.movement.notFound")
                ops = _pick(o.lines, operation_ids or [], "operationId",
                            "error.operation.notFound")
                of_ops = {x["operationId"] for x in ops}
                named = {m["movementId"] for m in chosen}
                chosen += [m for m in o.movements
                           if m["operationId"] in of_ops and m["movementId"] not in named]
                # the project's rule: a movement is refunded once; a repeat is refused
                again = [m["movementId"] for m in chosen if m["movementId"] in o.refunded]
                if again:
                    raise BusinessError("failed", "error.movement.alreadyRefunded: "
                                                  + ", ".join(map(str, again)))
            now = self.clock()
            refund = Order(next(self._ids), o.file_id, "REFUND_CLIENT", o.purchaser, now, now,
                           "CLOSED")
            units = Counter(m["operationId"] for m in chosen)
            refund.lines = [{**line, "operationId": next(self._ids),
                             "quantity": -units[line["operationId"]],
                             "totalAmount": -units[line["operationId"]] * line["unitPrice"]}
                            for line in o.lines if units[line["operationId"]]]
            self._release(o, chosen)
            o.refunded.update(m["movementId"] for m in chosen)
            self.orders[refund.id] = refund
            self._save(refund, finished=True)
        return {"orderUpdateData": {"orderId": refund.id, "totalAmount": refund.total}}


def _id_list(body: dict, key: str, required: bool = False) -> list[int] | None:
    """The ids of ``body[key]``, without repeats: None when absent (and not ``required``); an
    empty list or one of non-integers is refused."""
    ids = body.get(key)
    if ids is None:
        if required:
            raise BusinessError("failed", f"error.parameter.missing: {key}")
        return None
    if not isinstance(ids, list) or not ids or \
            any(isinstance(x, bool) or not isinstance(x, int) for x in ids):
        raise BusinessError("failed", f"error.parameter.invalid: {key}")
    return list(dict.fromkeys(ids))


def _pick(items: list[dict], ids: list[int], key: str, missing: str) -> list[dict]:
    """The items whose ``key`` is one of ``ids``, in the order of ``ids``; an id none has is
    refused with ``missing``."""
    by_id = {x[key]: x for x in items}
    unknown = [i for i in ids if i not in by_id]
    if unknown:
        raise BusinessError("failed", f"{missing}: " + ", ".join(map(str, unknown)))
    return [by_id[i] for i in ids]


def _as_body(lines: list[dict]) -> dict:
    simple = [{"itemId": x["itemId"], "audienceSubCategoryId": x["audienceSubCategoryId"],
               "quantity": x["quantity"], "timeslotId": x.get("timeslotId")}
              for x in lines if "itemId" in x]
    entry = [{"performanceId": x["performanceId"], "seatCategoryId": x["seatCategoryId"],
              "audienceSubCategoryId": x["audienceSubCategoryId"], "quantity": x["quantity"]}
             for x in lines if "performanceId" in x]
    return {"simpleProductOperations": simple,
            "singleEntryAttributionOperations": {"operationAttributions": entry}}


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
