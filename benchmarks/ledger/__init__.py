"""The usage ledger's benchmark (``python -m benchmarks.ledger``)."""
