"""A target that takes nothing (type ``gate``): each record is retried later, or, with
``mode: reject``, refused for good (a dead letter); ``open`` lets it take everything."""

from __future__ import annotations

from s360bridge.core.api import ANY_STREAM, PushResult, Target, hookimpl


class GateTarget(Target):
    """A target that takes nothing: each record is retried later, or refused for good."""

    kind = "gate"
    OPTIONS = frozenset({"mode"})

    def __init__(self, name, options, ctx):
        super().__init__(name, options, ctx)
        self.mode = options.get("mode", "retry")  # retry | reject | open


class GatePlugin:
    @hookimpl
    def register_targets(self, register):
        register(GateTarget.kind, GateTarget)

    @hookimpl
    def register_transforms(self, register):
        register(ANY_STREAM, GateTarget.kind)

    @hookimpl
    def transform(self, institution, stream, target, records):
        return list(records)

    @hookimpl
    def push(self, institution, stream, target, items):
        result = PushResult()
        for i in range(len(items)):
            if target.mode == "open":
                continue
            if target.mode == "reject":
                result.reject(i, "the gate refuses it")
            else:
                result.retry_later(i, "the gate is closed")
        return result
