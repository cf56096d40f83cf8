"""PostgreSQL: the inbox queues the rows copied into it by a session that asks for it.

The receiver's batch of new versions was four round trips to the server: the ids drawn and
queued, the COPY's start, its end, the COMMIT. Copied alone, in autocommit (the COPY commits
itself, its WAL flushed, before it answers), it is two: through gunicorn, 1.29x the records
stored a second (bench/README.md). The queue rows are then made on the server,
by this statement-level trigger, from the rows the COPY inserted (a transition table), with
their key hashes (engine_0014). Only a session with ``s360.queue_inserts`` on (the ingest's own
autocommit connections, which set it when they connect: core/storage/db.py ``_queueing_twin``)
has it act: every other writer of inbox rows queues them itself, as before. The function keeps
the search path it was made with, so that it finds the queue beside the inbox. SQLite is
unchanged.
"""

from alembic import op

revision = "engine_0015"
down_revision = "engine_0014"
branch_labels = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("""
        CREATE FUNCTION s360_queue_inserted() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $$
        BEGIN
            IF current_setting('s360.queue_inserts', true) = 'on' THEN
                INSERT INTO queue (id, institution, next_attempt_at, key_hash)
                SELECT id, institution, 0,
                       hashtextextended(concat_ws(chr(31), institution, stream, record_key), 0)
                FROM inserted ORDER BY id;
            END IF;
            RETURN NULL;
        END $$""")
    op.execute("""
        CREATE TRIGGER inbox_queue_inserted AFTER INSERT ON inbox
        REFERENCING NEW TABLE AS inserted FOR EACH STATEMENT
        EXECUTE FUNCTION s360_queue_inserted()""")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER inbox_queue_inserted ON inbox")
    op.execute("DROP FUNCTION s360_queue_inserted()")
