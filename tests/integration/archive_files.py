"""Reading an archive folder the plain way (gzip + json), to check what Spark jobs compute."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any


def archived_records(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Every archived record under ``root``, by topic, in object-key order."""
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for path in sorted(root.glob("topic=*/dt=*/hour=*/*.jsonl.gz")):
        for line in gzip.decompress(path.read_bytes()).splitlines():
            record = json.loads(line)
            out[record["kafka_topic"]].append(record)
    return out
