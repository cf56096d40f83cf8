"""S-360's orders as its ExternalOrderService reads them back (``getOrderDetails``).

The store holds the orders the simulator generated (and, later, those it sells), in the order
webhook's record shape; REFERENCE §c, §h.4.
"""

from __future__ import annotations

import copy
import threading

from .contacts import BusinessError


class OrderStore:
    def __init__(self):
        self.orders: dict[int, dict] = {}
        self._lock = threading.Lock()

    def add(self, records: list[dict]) -> None:
        with self._lock:
            for r in records:
                self.orders[r["orderDetailsData"]["orderId"]] = copy.deepcopy(r)

    def get(self, order_id) -> dict:
        with self._lock:
            record = self.orders.get(order_id)
            if record is None:
                raise BusinessError("failed", f"error.order.notFound: {order_id}")
            return copy.deepcopy(record)


def get_order_details(store: OrderStore, body: dict) -> dict:
    order_id = body.get("orderId")
    if isinstance(order_id, bool) or not isinstance(order_id, int):
        raise BusinessError("failed", "error.parameter.invalid: orderId")
    return store.get(order_id)


METHODS = {"getOrderDetails": get_order_details}
