"""The migrations of the contacts plugins' tables: the Alembic branch ``contacts``."""
