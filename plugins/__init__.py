"""Built-in plugins: one folder per stream (contacts, orders, ticketchecks) and per target type
(sql, jsonl). They use the same hooks as third-party plugins."""
