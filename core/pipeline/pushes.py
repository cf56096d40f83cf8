"""One push of a batch to a target, and how a failure is narrowed down to the records at
fault: a 500 to the whole batch halves it, another unexpected error splits it, a target that is
down or a record nothing can deliver fails the batch at once."""

from __future__ import annotations

from dataclasses import dataclass

from s360bridge.core.connectors.http import Refused
from s360bridge.core.errors import ServerError, TargetUnavailable, Undeliverable
from s360bridge.core.plugin.streams import StoredRecord


@dataclass
class Failure:
    """Why one record did not reach one target: retried later (after ``wait`` seconds at
    least), or ``rejected`` for good (a dead letter at once)."""

    error: str
    wait: float = 0.0
    rejected: bool = False


def push(hooks, inst, stream, target, records: list[StoredRecord]) -> dict[int, Failure]:
    """Push a batch; answers seq -> Failure for the records that did not get through.
    A 500 to the whole batch halves it (see _halve); another unexpected error splits it
    to isolate the record at fault."""
    outcome = _attempt(hooks, inst, stream, target, records)
    if isinstance(outcome, ServerError):
        return _halve(hooks, inst, stream, target, records, outcome)
    return outcome


def _halve(hooks, inst, stream, target, records, exc: ServerError) -> dict[int, Failure]:
    """Push each half of a batch the target answered 500 to; when both halves get a 500
    too, the target is down (retried whole, later), else the half that fails is halved."""
    if len(records) == 1:
        return {records[0].seq: Failure(str(exc), exc.retry_after or 0.0)}
    half = len(records) // 2
    parts = (records[:half], records[half:])
    results = [_attempt(hooks, inst, stream, target, part) for part in parts]
    if all(isinstance(r, ServerError) for r in results):
        why = f"{exc} (both halves of the batch too: the target is treated as unavailable)"
        return {r.seq: Failure(why, exc.retry_after or 0.0) for r in records}
    failures: dict[int, Failure] = {}
    for part, result in zip(parts, results, strict=True):
        failures |= (_halve(hooks, inst, stream, target, part, result)
                     if isinstance(result, ServerError) else result)
    return failures


def _attempt(hooks, inst, stream, target,
             records: list[StoredRecord]) -> dict[int, Failure] | ServerError:
    try:
        items = hooks.transform(inst, stream, target, records)
        result = hooks.push(inst, stream, target, items)
    except ServerError as exc:
        return exc
    except TargetUnavailable as exc:  # the whole target is down: no point in splitting
        return {r.seq: Failure(str(exc), exc.retry_after or 0.0) for r in records}
    except Undeliverable as exc:  # nothing can deliver them: waiting will not help
        return {r.seq: Failure(str(exc), rejected=True) for r in records}
    except Exception as exc:
        if len(records) == 1:
            return {records[0].seq: Failure(f"{type(exc).__name__}: {exc}",
                                            rejected=isinstance(exc, Refused))}
        half = len(records) // 2
        return (push(hooks, inst, stream, target, records[:half])
                | push(hooks, inst, stream, target, records[half:]))
    failures = {records[i].seq: Failure(reason, result.wait.get(i, 0.0))
                for i, reason in result.retry.items()}
    failures |= {records[i].seq: Failure(reason, rejected=True)
                 for i, reason in result.rejected.items()}
    return failures
