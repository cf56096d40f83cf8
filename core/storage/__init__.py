"""The engine's own database: schema, engines, transactions and SQL on the driver."""
