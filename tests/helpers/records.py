"""Records for tests, built from the fixtures."""

from __future__ import annotations

from ..conftest import fixture


def sale_version(amount: int) -> dict:
    order = fixture("order_sale.json")[0]
    order["orderDetailsData"]["saleAmount"] = amount
    return order
