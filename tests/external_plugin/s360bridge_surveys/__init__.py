"""An example third-party plugin: a ``surveys`` stream keyed by ``surveyId``, delivered to any
target that takes plain records (here the built-in jsonl journal)."""

import click

from s360bridge.core.hookspecs import hookimpl
from s360bridge.core.streams import RecordValidator, Stream, split_batch

STREAM = Stream("surveys", "Visitor surveys", key_field="surveyId")
VALIDATOR = RecordValidator({
    "type": "object", "required": ["surveyId", "score"],
    "properties": {"surveyId": {"type": "integer"},
                   "score": {"type": "integer", "minimum": 0, "maximum": 10}},
})


@hookimpl
def register_streams(register):
    register(STREAM)


@hookimpl
def receive(institution, stream, records):
    if stream.name != STREAM.name:
        return None
    return split_batch(records, VALIDATOR, lambda r: str(r["surveyId"]))


@hookimpl
def register_commands(cli):
    @cli.command()
    def surveys():
        """Say that the surveys plugin is here."""
        click.echo("surveys plugin ready")
