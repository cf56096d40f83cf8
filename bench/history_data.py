"""The files of the import benchmark: JSON lines made from the reference's example records
(tests/fixtures, copied from the S-360 pack), each record with keys of its own and a date after
the history cut-off, written from a template (a few microseconds a record)."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson

EXAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"


def _template(record: dict) -> str:
    """The record as compact JSON with ``@@NAME@@`` (in a string) and ``"@@#NAME@@"`` (a number:
    the whole value, quotes included) turned into ``str.format`` fields."""
    text = orjson.dumps(record).decode().replace("{", "{{").replace("}", "}}")
    while "@@" in text:
        start = text.index("@@")
        end = text.index("@@", start + 2) + 2
        name = text[start + 2:end - 2]
        if name.startswith("#"):
            text = text[:start - 1] + "{" + name[1:] + "}" + text[end + 1:]
        else:
            text = text[:start] + "{" + name + "}" + text[end:]
    return text


def _when(i: int) -> str:
    """A date-time after the cut-off (2019-01-01), a different second for most records."""
    return (f"{2019 + i % 6}-{1 + i % 12:02}-{2 + i % 27:02}T{i % 24:02}:{i % 60:02}:"
            f"{i // 60 % 60:02}.120+00:00")


def order_template() -> str:
    o = copy.deepcopy(orjson.loads((EXAMPLES / "order_sale.json").read_bytes())[0])
    d = o["orderDetailsData"]
    d.update(orderId="@@#order@@", contactReference="C@@contact@@",
             creationDateTime="@@when@@", orderSecretId="S@@order@@")
    ops = {}
    for n, op in enumerate(d["operationDatas"]):
        ops[op["operationId"]] = op["operationId"] = f"@@#op{n}@@"
    for n, mv in enumerate(d["movementDatas"]):
        mv["movementId"] = f"@@#mv{n}@@"
        mv["operationId"] = ops[mv["operationId"]]
    return _template(o)


def contact_template() -> str:
    c = copy.deepcopy(orjson.loads((EXAMPLES / "contacts_person.json").read_bytes())[0])
    c.update(contactId="@@#id@@", contactNumber="C@@number@@", creationDate="@@when@@")
    c["individualContact"].update(email="c@@number@@@example.org",
                                  login="c@@number@@@example.org")
    return _template(c)


def write_records(stream: str, n: int, path: Path) -> None:
    """``n`` distinct records of ``stream`` (contacts or orders), one a line."""
    base = 10**13
    with path.open("w") as f:
        if stream == "orders":
            tpl = order_template()
            for i in range(n):
                f.write(tpl.format(order=base + i, contact=i % 1_000_000, when=_when(i),
                                   op0=base + 2 * i, op1=base + 2 * i + 1, mv0=base + 3 * i,
                                   mv1=base + 3 * i + 1, mv2=base + 3 * i + 2) + "\n")
        else:
            tpl = contact_template()
            for i in range(n):
                f.write(tpl.format(id=base + i, number=i, when=_when(i)) + "\n")
