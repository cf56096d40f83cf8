"""The migrations of the offers' tables: the Alembic branch ``offers``."""
