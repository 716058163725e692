"""The usage ledger's reader: ``chat.completions`` into PostgreSQL, exactly once
(``chatbus ledger`` runs it; :mod:`chatbus.accounts.ledger` is what it writes)."""
