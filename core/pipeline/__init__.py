"""The pipeline: receive and store (ingest), claim, deliver, and the processes that run it."""
