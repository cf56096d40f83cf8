"""The simulator's sales side refuses what S-360 would, over real HTTP on loopback: the point of
sales, which movements leave an open order, refunds made once, files read back, and the partner
named in the token (REFERENCE §e.3, §h.2, §h.4)."""

from __future__ import annotations

import pytest

from s360bridge.simulator.catalog import PENDING_ACCOUNT, POS_ID

from .helpers.sales_api import ADULT, CAT2, PASS_ITEM, PASSES, PERF, SEATS


def movements(details: dict, operation: int | None = None) -> list[int]:
    return [m["movementId"] for m in details["movementDatas"]
            if operation in (None, m["operationId"])]


def operations(details: dict) -> tuple[int, int]:
    """The operation ids of the seats and of the passes."""
    ops = {"performanceId" in x: x["operationId"] for x in details["operationDatas"]}
    return ops[True], ops[False]


def lines(details: dict) -> list[tuple]:
    return [(x.get("performanceId") or x["itemId"], x["quantity"], x["totalAmount"])
            for x in details["operationDatas"]]


# -- getEventAvailability: the performances are mandatory [FOUND g.3] -------------------------
@pytest.mark.parametrize("performances", [None, []])
def test_event_availability_without_performances_is_refused(sim, performances):
    body = {"pointOfSalesId": POS_ID, "seatCategoryIds": [-1]}
    if performances is not None:
        body["performanceIds"] = performances
    r = sim.post("availabilityService", "getEventAvailability", body)
    assert r.status_code == 200 and r.json()["statusCode"] == "failed"
    assert "error.parameter.missing: performanceIds" in r.json()["statusDetail"]
    asked = sim.post("availabilityService", "getEventAvailability",
                     {**body, "performanceIds": [PERF]}).json()
    assert {(a["seatCategoryId"], a["available"]) for a in asked["eventAvailabilityData"]} \
        >= {(CAT2, 40)}


# -- createOrUpdateOrder: the point of sales [FOUND h.2] ---------------------------------------
@pytest.mark.parametrize("pos, detail", [
    ({}, "error.parameter.missing: pointOfSalesId"),
    ({"pointOfSalesId": None}, "error.parameter.missing: pointOfSalesId"),
    ({"pointOfSalesId": 466533847}, "error.parameter.invalid: pointOfSalesId"),
])
def test_an_order_without_the_point_of_sales_is_refused(sim, pos, detail):
    body = {"orderType": "SALE", **pos, "simpleProductOperations": [
        {"itemId": PASS_ITEM, "audienceSubCategoryId": ADULT, "quantity": 2}]}
    sim.refused("createOrUpdateOrder", body, detail)
    assert sim.sales.orders == {} and sim.left(PASSES) == 200  # nothing held


# -- abandonMovements: only the movements named [FOUND h.4] -------------------------------------
def test_abandoning_some_movements_keeps_the_order_open_with_the_others(sim):
    made = sim.order(seats=3, passes=2)
    order_id = made["orderId"]
    before = sim.details(order_id)
    seat_op, pass_op = operations(before)
    assert (sim.left(SEATS), sim.left(PASSES)) == (37, 198)
    gone = movements(before, seat_op)[:1] + movements(before, pass_op)
    sim.ok("abandonMovements", {"orderId": order_id, "movementIds": gone})
    after = sim.details(order_id)
    assert after["orderState"] == "OPEN" and sim.closed == []
    assert movements(after) == movements(before, seat_op)[1:]
    assert lines(after) == [(PERF, 2, 90000)] and after["saleAmount"] == 90000
    assert (sim.left(SEATS), sim.left(PASSES)) == (38, 200)  # only their places came back
    # the order closes with the amount of what is left, with a barcode per movement left
    sim.refused("createPaymentsAndCloseOrder", {"orderId": order_id, "payments": [
        {"amount": made["totalAmount"], "paymentMethodId": PENDING_ACCOUNT}]},
        "error.payment.amount")
    sim.ok("createPaymentsAndCloseOrder", {"orderId": order_id, "payments": [
        {"amount": 90000, "paymentMethodId": PENDING_ACCOUNT}]})
    closed = sim.details(order_id)
    assert closed["orderState"] == "CLOSED" and all(m["barcode"] for m in closed["movementDatas"])
    assert sim.left(SEATS) == 38


def test_abandoning_the_last_movements_abandons_the_order(sim):
    made = sim.order(seats=2, passes=1)
    order_id = made["orderId"]
    first = movements(sim.details(order_id))[:1]
    sim.ok("abandonMovements", {"orderId": order_id, "movementIds": first})
    rest = movements(sim.details(order_id))
    sim.ok("abandonMovements", {"orderId": order_id, "movementIds": rest})
    assert [(o["orderId"], o["orderState"]) for o in sim.closed] == [(order_id, "ABANDONED")]
    assert (sim.left(SEATS), sim.left(PASSES)) == (40, 200)
    sim.refused("abandonMovements", {"orderId": order_id, "movementIds": rest},
                "error.order.notOpen")


@pytest.mark.parametrize("ids, detail", [
    (None, "error.parameter.missing: movementIds"),
    ([], "error.parameter.invalid: movementIds"),
    ("all", "error.parameter.invalid: movementIds"),
    ([True], "error.parameter.invalid: movementIds"),
    ([404], "error.movement.notFound: 404"),
])
def test_abandoning_without_known_movements_is_refused(sim, ids, detail):
    made = sim.order(seats=2, passes=0)
    body = {"orderId": made["orderId"]} | ({} if ids is None else {"movementIds": ids})
    if ids == [404]:  # one known and one unknown: neither leaves
        body["movementIds"] = [made["movementDataUpdates"][0]["movementId"], 404]
    sim.refused("abandonMovements", body, detail)
    assert len(movements(sim.details(made["orderId"]))) == 2 and sim.left(SEATS) == 38
    assert sim.closed == []


# -- cancelOperations: refunded once, wholly or in part [FOUND-CODE h.4 K3] --------------------
def refunds(sim) -> list[list[tuple]]:
    return [lines(o) for o in sim.closed if o["orderType"] == "REFUND_CLIENT"]


def test_a_sale_is_refunded_once(sim):
    sale = sim.sold(seats=3, passes=2)
    assert (sim.left(SEATS), sim.left(PASSES)) == (37, 198)
    answer = sim.ok("cancelOperations", {"orderId": sale["orderId"]})["orderUpdateData"]
    assert answer["totalAmount"] == -(3 * 45000 + 2 * 25000)
    assert sorted(refunds(sim)[0]) == [(PASS_ITEM, -2, -50000), (PERF, -3, -135000)]
    assert (sim.left(SEATS), sim.left(PASSES)) == (40, 200)
    sim.refused("cancelOperations", {"orderId": sale["orderId"]}, "error.order.alreadyRefunded")
    sim.refused("cancelOperations", {"orderId": sale["orderId"],
                                     "movementIds": movements(sale)[:1]},
                "error.movement.alreadyRefunded")
    assert len(refunds(sim)) == 1 and (sim.left(SEATS), sim.left(PASSES)) == (40, 200)


def test_a_partial_cancel_refunds_only_the_movements_named_then_the_rest(sim):
    sale = sim.sold(seats=3, passes=2)
    seat_op, pass_op = operations(sale)
    one_seat = movements(sale, seat_op)[:1]
    sim.ok("cancelOperations", {"orderId": sale["orderId"], "movementIds": one_seat})
    assert refunds(sim) == [[(PERF, -1, -45000)]]
    assert (sim.left(SEATS), sim.left(PASSES)) == (38, 198)
    sim.refused("cancelOperations", {"orderId": sale["orderId"], "movementIds": one_seat},
                f"error.movement.alreadyRefunded: {one_seat[0]}")
    sim.refused("cancelOperations", {"orderId": sale["orderId"], "operationIds": [seat_op]},
                "error.movement.alreadyRefunded")  # the operation has a refunded movement
    sim.ok("cancelOperations", {"orderId": sale["orderId"], "operationIds": [pass_op]})
    assert refunds(sim)[-1] == [(PASS_ITEM, -2, -50000)] and sim.left(PASSES) == 200
    sim.ok("cancelOperations", {"orderId": sale["orderId"]})  # what is not refunded yet
    assert refunds(sim)[-1] == [(PERF, -2, -90000)] and sim.left(SEATS) == 40
    sim.refused("cancelOperations", {"orderId": sale["orderId"]}, "error.order.alreadyRefunded")
    assert sim.details(sale["orderId"])["orderState"] == "CLOSED"  # the sale itself is kept


@pytest.mark.parametrize("body, detail", [
    ({"movementIds": []}, "error.parameter.invalid: movementIds"),
    ({"operationIds": "all"}, "error.parameter.invalid: operationIds"),
    ({"movementIds": [404]}, "error.movement.notFound: 404"),
    ({"operationIds": [404]}, "error.operation.notFound: 404"),
])
def test_cancelling_unknown_movements_or_operations_is_refused(sim, body, detail):
    sale = sim.sold(seats=2, passes=0)
    sim.refused("cancelOperations", {"orderId": sale["orderId"], **body}, detail)
    assert refunds(sim) == [] and sim.left(SEATS) == 38


def test_only_a_closed_sale_is_cancelled(sim):
    made = sim.order(seats=1, passes=0)
    sim.refused("cancelOperations", {"orderId": made["orderId"]}, "error.order.notCancellable")
    sim.refused("cancelOperations", {"orderId": 404}, "error.order.notCancellable")


# -- getFileDetails [FOUND-CODE h.4 K3] -----------------------------------------------------
def test_a_file_lists_its_orders_open_ones_included_oldest_first(sim):
    sale = sim.sold(seats=2, passes=0)
    file_id = sale["operationDatas"][0]["fileId"]
    sim.ok("cancelOperations", {"orderId": sale["orderId"], "movementIds": movements(sale)[:1]})
    more = sim.order(seats=1, passes=1, fileId=file_id)  # a new cart on the same file
    answer = sim.ok("getFileDetails", {"fileId": file_id})
    file = answer["fileDetailsData"]
    assert {k: file[k] for k in ("fileId", "fileState", "fileContacts", "fileAttachments")} \
        == {"fileId": file_id, "fileState": "IN_PROGRESS", "fileContacts": [],
            "fileAttachments": []}
    assert isinstance(file["lastModDateTime"], str)
    orders = answer["orderDetailsDatas"]
    assert [(o["orderType"], o["orderState"]) for o in orders] == [
        ("SALE", "CLOSED"), ("REFUND_CLIENT", "CLOSED"), ("SALE", "OPEN")]
    assert orders[0] == sale and orders[2]["orderId"] == more["orderId"]
    assert len(orders[2]["movementDatas"]) == 2  # the open order's movements
    assert orders[2] == sim.details(more["orderId"])
    sim.ok("abandonMovements", {"orderId": more["orderId"],
                                "movementIds": movements(orders[2])})
    assert sim.ok("getFileDetails", {"fileId": file_id})["fileDetailsData"]["fileState"] \
        == "SETTLED"  # one seat of the sale is still sold


def test_a_released_reservation_is_on_its_file(sim):
    made = sim.order(seats=2, passes=0, orderType="RESERVATION")
    sim.ok("closeOrder", {"orderId": made["orderId"], "orderType": "RESERVATION"})
    file_id = made["operationDataUpdates"][0]["fileId"]
    file = sim.ok("getFileDetails", {"fileId": file_id})
    assert file["fileDetailsData"]["fileState"] == "RESERVATION"
    freeing = sim.ok("createOrUpdateOrder", {"pointOfSalesId": POS_ID, "fileId": file_id,
                                             "orderType": "RESERVATION_FREEING"})
    sim.ok("closeOrder", {"orderId": freeing["orderUpdateData"]["orderId"],
                          "orderType": "RESERVATION_FREEING"})
    file = sim.ok("getFileDetails", {"fileId": file_id})
    assert [o["orderType"] for o in file["orderDetailsDatas"]] == ["RESERVATION",
                                                                   "RESERVATION_FREEING"]
    assert file["fileDetailsData"]["fileState"] == "CANCELLED" and sim.left(SEATS) == 40


def test_an_abandoned_sale_resuming_a_reservation_leaves_the_reservation_as_it_was(sim):
    """[INFERRED h.5] the reservation holds its places again and can still be freed."""
    made = sim.order(seats=2, passes=0, orderType="RESERVATION")
    sim.ok("closeOrder", {"orderId": made["orderId"], "orderType": "RESERVATION"})
    file_id = made["operationDataUpdates"][0]["fileId"]
    resumed = sim.ok("createOrUpdateOrder", {
        "pointOfSalesId": POS_ID, "fileId": file_id, "orderType": "SALE",
        "orderCreationOptions": ["RESUME_ALL_RESERVATION_OPERATIONS"]})["orderUpdateData"]
    assert sim.left(SEATS) == 38
    sim.ok("abandonMovements", {"orderId": resumed["orderId"], "movementIds": [
        m["movementId"] for m in resumed["movementDataUpdates"]]})
    assert sim.left(SEATS) == 38  # still held, by the reservation
    freeing = sim.ok("createOrUpdateOrder", {"pointOfSalesId": POS_ID, "fileId": file_id,
                                             "orderType": "RESERVATION_FREEING"})
    sim.ok("closeOrder", {"orderId": freeing["orderUpdateData"]["orderId"],
                          "orderType": "RESERVATION_FREEING"})
    assert sim.left(SEATS) == 40


@pytest.mark.parametrize("file_id, detail", [
    (404, "error.file.notFound: 404"),
    ("404", "error.parameter.invalid: fileId"),
    (True, "error.parameter.invalid: fileId"),
    (None, "error.parameter.invalid: fileId"),
])
def test_an_unknown_or_malformed_file_is_refused(sim, file_id, detail):
    sim.order(seats=1, passes=0)
    sim.refused("getFileDetails", {"fileId": file_id}, detail)


# -- the partner named in the token [FOUND e.3] ---------------------------------------------
def test_a_token_of_another_partner_is_refused(sim):
    r = sim.post("externalOrderService", "getFileDetails", {"fileId": 1}, iss="Partner 1")
    assert (r.status_code, r.text) == (401, "unknown partner")
    assert sim.post("externalOrderService", "getFileDetails", {"fileId": 1}).status_code == 200
    assert sim.api.count("getFileDetails", 401) == 1
