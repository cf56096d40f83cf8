"""Realistic S-360 records (contacts, orders, ticket checks) from a fixed seed.

Shapes follow the reference pack's examples; amounts are integers in thousandths of the currency
(45000 = 45.00 EUR), ids 64-bit integers, contact numbers and barcodes strings.
"""

from __future__ import annotations

import datetime as dt
import random

FIRST = ["Claire", "Jonas", "Mary", "Luca", "Sofia", "Noah", "Emma", "Liam", "Mia", "Elias",
         "Léa", "Jan", "Anna", "Tom", "Zoé", "Ben", "Nina", "Paul", "Lara", "Tim"]
LAST = ["Dubois", "Meier", "Smith", "Rossi", "Keller", "Müller", "Martin", "Bernard", "Weber",
        "Fischer", "Schmid", "Huber", "Moreau", "Favre", "Bianchi", "Brunner"]
CITIES = [("1201", "Geneve", "CH"), ("8001", "Zürich", "CH"), ("3011", "Rotterdam", "NL"),
          ("75001", "Paris", "FR"), ("10115", "Berlin", "DE"), ("1003", "Lausanne", "CH")]
SCHOOLS = ["Westfield School", "Lakeside College", "Opera Friends Association", "Acme Corp"]
PRODUCTS = [  # (productId, code, name, family, kind, unit price)
    (10228231108335, "HAMLET24", "Hamlet", "SINGLE_ENTRY", "SINGLE_ENTRY", 45000),
    (10228231108400, "MUSPASS", "Museum open pass", "PASS", "PASS", 25000),
    (10228231108512, "SEASON24", "Season ticket 2024", "SEASONTICKET", "SEASONTICKET", 320000),
    (10228231108620, "VISIT10", "Guided visit 10:00", "PASS", "PASS", 18000),
]
CURRENCY = {"currencyCode": "EUR", "fractionDigit": 2, "minAmount": 10, "symbol": "€"}
ORDER_KINDS = ("SALE", "SALE", "SALE", "REFUND_CLIENT", "RESERVATION", "ABANDONED")


def _iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}+00:00"


class Generator:
    """Deterministic S-360 data: the same seed gives the same records."""

    def __init__(self, seed: int = 1, start: dt.datetime | None = None):
        self.rnd = random.Random(seed)
        self.clock = start or dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.UTC)
        self._next_id = 10228845000000 + seed * 10_000_000
        self.contact_numbers: list[str] = []
        self._numbers: set[str] = set()

    def _id(self) -> int:
        self._next_id += self.rnd.randint(1, 50)
        return self._next_id

    def _tick(self) -> dt.datetime:
        self.clock += dt.timedelta(seconds=self.rnd.randint(5, 600),
                                   milliseconds=self.rnd.randint(0, 999))
        return self.clock

    def contact(self) -> dict:
        number = f"{self.rnd.randint(0, 9_999_999):07d}"  # leading zeros are significant
        while number in self._numbers:
            number = f"{self.rnd.randint(0, 9_999_999):07d}"
        self._numbers.add(number)
        self.contact_numbers.append(number)
        zip_code, city, country = self.rnd.choice(CITIES)
        common = {"contactId": self._id(), "contactNumber": number, "role": "PUBLIC",
                  "creationDate": _iso(self._tick()), "hasWarning": False,
                  "addresses": [{"isMain": True,
                                 "firstAddressLine": f"Rue {self.rnd.randint(1, 99)}",
                                 "zipCode": zip_code, "locality": city, "countryCode": country}]}
        if self.rnd.random() < 0.15:
            return {**common, "type": "STRUCTURE",
                    "structureContact": {"structureName": self.rnd.choice(SCHOOLS),
                                         "structureCode": f"S{self.rnd.randint(1000, 9999)}"}}
        first, last = self.rnd.choice(FIRST), self.rnd.choice(LAST)
        email = f"{first}.{last}{self.rnd.randint(1, 999)}@example.org".lower()
        return {**common, "type": "INDIVIDUAL",
                "individualContact": {"individualTitle": self.rnd.choice(["MR", "MRS", "MISS"]),
                                      "individualFirstname": first, "individualLastname": last,
                                      "email": email, "countryCode": country},
                "authorizations": [{"code": "EMAIL_INSTITUTION",
                                    "value": self.rnd.random() < 0.6}]}

    def order(self) -> dict:
        kind = self.rnd.choice(ORDER_KINDS)
        created = self._tick()
        order_type = "SALE" if kind == "ABANDONED" else kind
        ops, movements, total = [], [], 0
        if kind != "ABANDONED":
            sign = -1 if kind.startswith("REFUND") else 1
            file_id = self._id()
            for n, (pid, code, name, family, op_kind, price) in enumerate(
                    self.rnd.sample(PRODUCTS, self.rnd.randint(1, 2)), start=1):
                qty = self.rnd.randint(1, 4)
                op_id = self._id()
                ops.append({"operationId": op_id, "operationNumber": n, "fileId": file_id,
                            "kind": op_kind, "productFamilyType": family, "quantity": sign * qty,
                            "basePrice": price, "unitPrice": price,
                            "totalAmount": sign * qty * price, "productId": pid,
                            "product": name, "productCode": code, "itemId": pid + 1717})
                movements += [{"movementId": self._id(), "operationId": op_id,
                               "instanceNumber": i + 1, "transferable": True, "resumed": False}
                              for i in range(qty)]
                total += sign * qty * price
        amounts = dict.fromkeys(("saleAmount", "preSaleAmount", "reservationAmount",
                                 "optionAmount", "waitingAccountBalanceAmount"), 0)
        amounts["reservationAmount" if kind == "RESERVATION" else "saleAmount"] = total
        buyer = self.rnd.choice(self.contact_numbers) if self.contact_numbers else "0004711"
        return {"orderDetailsData": {
            "orderId": self._id(), "orderType": order_type,
            "orderState": "ABANDONED" if kind == "ABANDONED" else "CLOSED",
            "creationDateTime": _iso(created),
            "referenceDate": _iso(created.replace(hour=0, minute=0, second=0, microsecond=0)),
            "expirationDate": _iso(created + dt.timedelta(minutes=23)), **amounts,
            "catalogCurrency": CURRENCY, "contactReference": buyer,
            "salesChannelCode": self.rnd.choice(["B2C", "BO", "RESAPI"]),
            "operationDatas": ops, "movementDatas": movements}}

    def ticket_check(self) -> dict:
        ok = self.rnd.random() < 0.92
        local = self._tick().astimezone(dt.timezone(dt.timedelta(hours=1)))
        return {"ticket_check_id": self._id(), "movement_id": self._id(), "ticket_id": self._id(),
                "barcode": f"0{self.rnd.randint(10**22, 10**23 - 1)}",
                "access_time": local.strftime("%Y-%m-%d %H:%M:%S"),
                "check_flow": "IN" if self.rnd.random() < 0.8 else "OUT",
                "result": "OK" if ok else "FAIL",
                "failure_reason": "NO_FAIL" if ok else "NO_MORE_ENTRY_ALLOWED_TODAY"}

    def records(self, stream: str, n: int) -> list[dict]:
        make = {"contacts": self.contact, "orders": self.order,
                "ticketchecks": self.ticket_check}[stream]
        return [make() for _ in range(n)]
