"""The archiver benchmark (``python -m benchmarks.archiver``; see its ``__main__``)."""
