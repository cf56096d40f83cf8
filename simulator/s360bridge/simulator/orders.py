"""S-360's orders as its ExternalOrderService reads them back (``getOrderDetails``,
``getFileDetails``).

The store holds the orders the simulator generated and those it sells, in the order webhook's
record shape, and the file each is on; REFERENCE §c, §h.4.
"""

from __future__ import annotations

import copy
import threading

from .contacts import BusinessError


class OrderStore:
    def __init__(self):
        self.orders: dict[int, dict] = {}
        self.files: dict[int, int] = {}  # orderId -> fileId
        self.modified: dict[int, str] = {}  # orderId -> when it last changed
        self._lock = threading.Lock()

    def add(self, records: list[dict], file_id: int | None = None,
            at: str | None = None) -> None:
        """Keep ``records``; each is on ``file_id``, or else on the file its operations name
        (an order without operations, such as a generated abandoned one, is on none)."""
        with self._lock:
            for r in records:
                d = r["orderDetailsData"]
                self.orders[d["orderId"]] = copy.deepcopy(r)
                named = [op["fileId"] for op in d.get("operationDatas") or []
                         if op.get("fileId") is not None]
                on = file_id if file_id is not None else next(iter(named), None)
                if on is not None:
                    self.files[d["orderId"]] = on
                self.modified[d["orderId"]] = at or d.get("creationDateTime")

    def get(self, order_id) -> dict:
        with self._lock:
            record = self.orders.get(order_id)
            if record is None:
                raise BusinessError("failed", f"error.order.notFound: {order_id}")
            return copy.deepcopy(record)

    def on_file(self, file_id: int) -> list[tuple[dict, str]]:
        """The records of the orders on ``file_id``, oldest first, each with when it last
        changed."""
        with self._lock:
            found = [(copy.deepcopy(self.orders[o]), self.modified[o])
                     for o, f in self.files.items() if f == file_id]
        return sorted(found, key=lambda x: (x[0]["orderDetailsData"]["creationDateTime"],
                                            x[0]["orderDetailsData"]["orderId"]))


def get_order_details(store: OrderStore, body: dict) -> dict:
    order_id = body.get("orderId")
    if isinstance(order_id, bool) or not isinstance(order_id, int):
        raise BusinessError("failed", "error.parameter.invalid: orderId")
    return store.get(order_id)


def get_file_details(store: OrderStore, body: dict) -> dict:
    """``getFileDetails {fileId}`` answers ``FileDetailResult{fileDetailsData{fileId,
    fileState, lastModDateTime, fileContacts, fileAttachments}, orderDetailsDatas}``
    [FOUND-CODE h.4 K3]: every order on the file, open ones included, oldest first."""
    file_id = body.get("fileId")
    if isinstance(file_id, bool) or not isinstance(file_id, int):
        raise BusinessError("failed", "error.parameter.invalid: fileId")
    found = store.on_file(file_id)
    if not found:
        raise BusinessError("failed", f"error.file.notFound: {file_id}")
    orders = [record["orderDetailsData"] for record, _ in found]
    return {"fileDetailsData": {"fileId": file_id, "fileState": file_state(orders),
                                "lastModDateTime": max(at for _, at in found),
                                "fileContacts": [], "fileAttachments": []},
            "orderDetailsDatas": orders}


def file_state(orders: list[dict]) -> str:
    """[INFERRED c.7] The API's spellings of file states are NOT FOUND: these are the back
    office's labels (In progress, Abandoned, Cancelled, Settled, Reservation, Option) in the
    enum style of ``orderState``. A sale closed by the simulator counts as settled."""
    if any(d["orderState"] == "OPEN" for d in orders):
        return "IN_PROGRESS"
    closed = [d for d in orders if d["orderState"] == "CLOSED"]
    if not closed:
        return "ABANDONED"
    units = {kind: sum(op["quantity"] for d in closed if d["orderType"].startswith(kind)
                       for op in d.get("operationDatas") or [])
             for kind in ("SALE", "REFUND")}
    if units["SALE"]:
        return "CANCELLED" if units["SALE"] + units["REFUND"] <= 0 else "SETTLED"
    last = closed[-1]["orderType"]
    return last if last in ("RESERVATION", "OPTION") else "CANCELLED"


METHODS = {"getOrderDetails": get_order_details, "getFileDetails": get_file_details}
