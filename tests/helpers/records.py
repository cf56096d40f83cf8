"""Records for tests, built from the fixtures."""

from __future__ import annotations

from ..conftest import fixture


def sale_version(amount: int) -> dict:
    order = fixture("order_sale.json")[0]
    order["orderDetailsData"]["saleAmount"] = amount
    return order


def numbered_orders(first: int, n: int) -> list[dict]:
    """``n`` copies of the example sale, order ids from ``first`` on."""
    sale = fixture("order_sale.json")[0]
    return [{"orderDetailsData": {**sale["orderDetailsData"], "orderId": first + i}}
            for i in range(n)]
