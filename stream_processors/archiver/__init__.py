"""The archiver: every ``chat.*`` event to the object store, once, in the layout of
:mod:`schemas.archive` (``chatbus archiver`` runs it; ``chatbus archive verify`` checks it)."""
