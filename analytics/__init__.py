"""PySpark jobs over the archived event logs, and the report they produce.

``pyspark`` is imported only inside this package. The ``chatbus analytics`` and ``chatbus
simulate`` commands (:mod:`chatbus.cli.analytics`) drive it.
"""
