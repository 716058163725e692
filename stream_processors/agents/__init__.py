"""Faust agents of the stream processors (thin: the logic lives in plain modules)."""
