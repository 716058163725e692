"""The pieces of the fine-tuning ``dataset`` job (:mod:`analytics.jobs.dataset`).

* :mod:`~analytics.finetune.redaction` — personal data out of a turn (plain Python, a Spark UDF);
* :mod:`~analytics.finetune.counterfactual` — a term swapped for another, case kept (plain Python);
* :mod:`~analytics.finetune.turns` — the archive's turns with the reason each one is dropped;
* :mod:`~analytics.finetune.dedupe` — exact and near (MinHash LSH) duplicates;
* :mod:`~analytics.finetune.balance` — the split by conversation and the counterfactual copies;
* :mod:`~analytics.finetune.counts` — the data card's counts;
* :mod:`~analytics.finetune.card` — the data card (JSON and Markdown);
* :mod:`~analytics.finetune.files` — single files (JSONL, the card) on a folder or Hadoop FS.

``pyspark`` is imported inside functions only, as everywhere in ``analytics/``.
"""
