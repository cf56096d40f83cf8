"""The ``s360bridge`` command line."""
