"""Benchmarks, outside the runtime packages: each may import any component, ``infra.local``
included (``make bench``; results in ``docs/benchmarks.md``).

- :mod:`benchmarks.inference`: chatbus over Kafka against the model's ceiling and peer servers;
- :mod:`benchmarks.archiver`: the archiver against a bare consumer, and its sustained lag;
- :mod:`benchmarks.analytics`: the Spark jobs over a million archived events.
"""
