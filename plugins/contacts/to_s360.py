"""The ``s360_contacts`` target: CRM contact changes applied to S-360 through the Contact API.

Matching (REFERENCE §f): a change is applied to the contact it is linked to (``crm_links``), else to
the contact number it carries, else to the contact found by e-mail (several: the one with an
internet login, then an individual over a relay, then the lowest number), else a new contact is
created, in lists (``createCulturalContact``), and its number is written back to the CRM.
Each method has its own budget, so updates, searches and creations run side by side.

A change that repeats what the CRM is known to hold (the bridge's own write coming back from
the CRM) is not sent. Conflicts: S-360 is the system of record; a CRM change is applied when it
reaches the bridge, and S-360's resulting contact goes back to the CRM whenever it differs from
what the CRM holds, so both sides end on S-360's state (last writer to S-360 wins).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass

from s360bridge.core.api import (
    CONTACT_SERVICE,
    SEARCH_RESULTS,
    PushResult,
    S360ApiError,
    S360BusinessError,
    Target,
    TargetUnavailable,
    best_match,
    crm_links,
    hookimpl,
    target_hooks,
)

from .crm_changes import STREAM, mapping

log = logging.getLogger("s360bridge.to_s360")
CREATE_FIELDS = {"individualFirstname": "firstName", "individualLastname": "lastName",
                 "email": "email"}  # what a CulturalContactData takes of individualContact


@dataclass
class Change:
    """One CRM change: its CRM id, the CRM fields compared for echoes, the S-360 fields."""

    crm_id: str
    crm_fields: dict
    number: str | None
    person: dict  # individualContact fields
    number_field: str  # the CRM field that holds the S-360 contact number


class S360ContactsTarget(Target):
    kind = "s360_contacts"
    uses_s360_api = True
    OPTIONS = frozenset({"contact_numbers_to", "batch_size", "create_batch_size"})

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)
        self.batch_size = options.get("batch_size", 200)
        self.create_batch_size = options.get("create_batch_size", 50)

    def describe(self) -> str:
        back = self.options.get("contact_numbers_to")
        return "S-360 Contact API" + (f" (new numbers written back to {back})" if back else "")

    def deliver(self, inst, stream, changes: list[Change]) -> PushResult:
        """Apply the changes; S-360 unavailable (or refusing the credentials) makes the whole
        batch wait for a retry, a business error fails only its change."""
        match_by_email = inst.streams[stream.name].options.get("match_by_email", True)
        try:
            return self._apply(inst, changes, match_by_email)
        except S360BusinessError:
            raise
        except S360ApiError as exc:
            raise TargetUnavailable(str(exc), getattr(exc, "retry_after", None)) from exc

    def _apply(self, inst, changes: list[Change], match_by_email: bool) -> PushResult:
        client, engine = self.ctx.s360(inst), self.ctx.engine
        result = PushResult()
        saves: queue.Queue = queue.Queue()
        searches, creates = [], []
        found_by_email: dict[int, str] = {}  # the CRM learns these numbers once saved
        matched: list[tuple[int, str]] = []
        for i, ch in enumerate(changes):
            link = crm_links.find(engine, inst.code, ch.crm_id, ch.number)
            if link and crm_links.holds(link[1], ch.crm_fields):
                continue  # the CRM repeating what the bridge wrote: nothing changed
            number = ch.number or (link[0] if link else None)
            if number:
                saves.put((i, number))
            elif match_by_email and ch.person.get("email"):
                searches.append(i)
            else:
                creates.append(i)

        def save(i: int, number: str) -> None:
            ch = changes[i]
            try:
                client.call(CONTACT_SERVICE, "saveIndividualContactData",
                            {"contactNumber": number, "individualContact": ch.person})
            except S360BusinessError as exc:
                result.reject(i, str(exc))
                return
            crm_links.remember(engine, inst.code, [(number, ch.crm_id, ch.crm_fields)], merge=True)
            if found_by_email.get(i) == number:
                matched.append((i, number))

        lane = _Lane(saves, save)
        try:
            for i in searches:
                try:
                    found = client.call(CONTACT_SERVICE, "searchContact",
                                        {"email": changes[i].person["email"]})
                except S360BusinessError as exc:
                    result.reject(i, str(exc))
                    continue
                number = best_match(found.get(SEARCH_RESULTS) or [])
                if number:
                    found_by_email[i] = number
                    saves.put((i, number))
                else:
                    creates.append(i)
            created = self._create(inst, client, changes, creates, result, saves)
        finally:
            lane.finish()
        self._write_back(inst, changes, created + matched)
        return result

    def _create(self, inst, client, changes, todo, result, saves) -> list[tuple[int, str]]:
        """Create contacts in lists; fields a CulturalContactData does not take follow as
        saves. Links are stored at once, so a retry never creates a contact twice."""
        created = []
        for start in range(0, len(todo), self.create_batch_size):
            chunk = todo[start:start + self.create_batch_size]
            body = {"contactDataList": [
                {"identifier": i, "createLogin": False,
                 **{CREATE_FIELDS[k]: v for k, v in changes[i].person.items()
                    if k in CREATE_FIELDS}} for i in chunk]}
            try:
                answer = client.call(CONTACT_SERVICE, "createCulturalContact", body)
            except S360BusinessError as exc:  # one contact refused: alone, it is a dead letter
                for i in chunk:
                    (result.reject if len(chunk) == 1 else result.retry_later)(i, str(exc))
                continue
            numbers = answer.get("identifierContactMap") or {}
            made = [(i, numbers[str(i)]) for i in chunk if str(i) in numbers]
            crm_links.remember(self.ctx.engine, inst.code,
                           [(n, changes[i].crm_id, changes[i].crm_fields) for i, n in made])
            for i in set(chunk) - {i for i, _ in made}:
                result.retry_later(i, "createCulturalContact gave no number for this contact")
            for i, n in made:
                if set(changes[i].person) - set(CREATE_FIELDS):
                    saves.put((i, n))
            created += made
        return created

    def _write_back(self, inst, changes, numbered) -> None:
        """The numbers of the contacts created or found by e-mail, to the CRM."""
        name = self.options.get("contact_numbers_to")
        if not name or not numbered:
            return
        crm = self.ctx.target(inst, name)
        crm.write_contact_numbers(
            inst, [{"crm_id": changes[i].crm_id, "contact_number": n} for i, n in numbered])
        crm_links.remember(self.ctx.engine, inst.code,  # the CRM now holds the number too
                       [(n, None, {changes[i].number_field: n}) for i, n in numbered], merge=True)


class _Lane:
    """Runs ``work(*item)`` for each queued item in a thread of its own, until finished; an
    error that stops the lane (S-360 unavailable) is raised again by ``finish``."""

    def __init__(self, items: queue.Queue, work):
        self.items, self.work, self.error = items, work, None
        self.thread = threading.Thread(target=self._run, name="s360-saves", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not None:
            if self.error is None:
                try:
                    self.work(*item)
                except Exception as exc:  # raised in the caller's thread by finish()
                    self.error = exc

    def finish(self) -> None:
        self.items.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


register_targets, push = target_hooks(S360ContactsTarget)


def _writes_back(institution, stream: str, target) -> str | None:
    """``contact_numbers_to`` must name a target that can take contact numbers back."""
    name = target.options.get("contact_numbers_to")
    if not name:
        return None
    if name not in institution.targets:
        return f"contact_numbers_to: {name} is not a target of {institution.code}"
    if not target.ctx.target(institution, name).takes_contact_numbers:
        return (f"contact_numbers_to: {name} cannot take contact numbers back (an http_crm "
                "target with a contact_numbers_url can)")
    return None


@hookimpl
def register_transforms(register):
    register(STREAM.name, S360ContactsTarget.kind, check=_writes_back)


@hookimpl
def transform(institution, stream, target, records):
    m = mapping(institution.streams[STREAM.name].options)
    changes = []
    for r in records:
        s360 = m.apply(r.record, drop_missing=True)
        changes.append(Change(r.key, {f: r.record.get(f) for f in m.sources()},
                              s360.get("contactNumber") or None,
                              s360.get("individualContact") or {}, m.spec["contactNumber"]))
    return changes
