"""The analytics benchmark (``python -m benchmarks.analytics``; see its ``__main__``)."""
