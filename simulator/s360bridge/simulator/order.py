"""One order of the simulator's sales side (sales.py), open or closed: its lines, the places it
holds, its movements, and what became of it (REFERENCE §h)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


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
