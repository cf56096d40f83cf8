"""What the S-360 Contact API says about contacts, shared by every plugin that searches them."""

from __future__ import annotations

CONTACT_SERVICE = "contactInformationPublicService"
SEARCH_RESULTS = "contacts"  # INFERRED: the list field of a searchContact answer (REFERENCE §f)


def best_match(found: list[dict]) -> str | None:
    """Among contacts sharing an e-mail: internet login first, individual over relay."""
    if not found:
        return None
    return min(found, key=lambda c: (not (c.get("individualContact") or {}).get("login"),
                                     c.get("role") == "RELAY", c["contactNumber"])
               )["contactNumber"]
