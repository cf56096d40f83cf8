"""What leaves an order on S-360's sales side (ExternalOrderService v1_33, REFERENCE §h.4):
movements abandoned from an open order, and a closed sale's operations or movements refunded
once. Part of ``Sales`` (sales.py), which holds the orders, their lock and the catalog."""

from __future__ import annotations

from collections import Counter

from . import order_lines
from .contacts import BusinessError
from .order import Order


class Removals:
    def _unit_quota(self, o: Order, movement: dict) -> Counter:
        """The places one movement holds: one unit of its line's quotas, as far as ``o``
        still holds them (an option holds none)."""
        line = next(x for x in o.lines if x["operationId"] == movement["operationId"])
        _, wanted = self._lines(order_lines.as_body([{**line, "quantity": 1}]))
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
