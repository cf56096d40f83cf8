"""What operators run: status and replay, retention and erasure, import, reconcile, repair."""
