"""Accounts, API keys, quotas and the usage ledger, in PostgreSQL.

* :mod:`.database` — connections and pools for ``CHATBUS_POSTGRES_URL``, errors in ours;
* :mod:`.migrate` — the schema, migrated by Alembic (``chatbus db upgrade``);
* :mod:`.keys` — users and their API keys (hashed), key states and per-key limits;
* :mod:`.ledger` — one row per answered request, written with the consumer's offsets;
* :mod:`.usage` — what the ledger says: a key's month so far, totals by day and model.
"""
