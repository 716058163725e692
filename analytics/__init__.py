"""PySpark jobs over the archived event logs, and the report they produce (issue 5).

``pyspark`` is imported only inside this package.
"""
