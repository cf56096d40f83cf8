"""An example third-party plugin: a ``surveys`` stream keyed by ``surveyId``, delivered to any
target that takes plain records (here the built-in jsonl journal)."""

import click

from s360bridge.core.api import RecordValidator, Stream, hookimpl, stream_hooks

STREAM = Stream("surveys", "Visitor surveys")
VALIDATOR = RecordValidator({
    "type": "object", "required": ["surveyId", "score"],
    "properties": {"surveyId": {"type": "integer"},
                   "score": {"type": "integer", "minimum": 0, "maximum": 10}},
})


# the two hooks every stream writes alike: register the stream, validate and key its batches
register_streams, receive = stream_hooks(STREAM, lambda inst: VALIDATOR,
                                         lambda inst: lambda r: str(r["surveyId"]))


@hookimpl
def register_commands(cli):
    @cli.command()
    def surveys():
        """Say that the surveys plugin is here."""
        click.echo("surveys plugin ready")
