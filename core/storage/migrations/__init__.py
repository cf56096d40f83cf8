"""The migrations of the engine's own tables: the Alembic branch ``engine``.

A revision file here is named ``engine_NNNN_what_it_does.py`` and its ``revision`` is
``engine_NNNN``; ``down_revision`` is the one before. See core/storage/migrate.py.
"""
