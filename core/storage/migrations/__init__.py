"""The migrations of the engine's own tables: the Alembic branch ``engine``; and of the CRM links
(core/connectors/crm_links.py, the loop breaker the http_crm and s360_contacts targets share):
the branch ``crm``, whose revisions are named ``crm_NNNN``.

A revision file here is named ``engine_NNNN_what_it_does.py`` and its ``revision`` is
``engine_NNNN``; ``down_revision`` is the one before. See core/storage/migrate.py.
"""
