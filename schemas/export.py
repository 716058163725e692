"""Export the JSON Schema of every event to ``schemas/json/`` (``make schemas``).

``python -m schemas.export --check`` exits non-zero when the committed files are stale.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from schemas.events import ALL_EVENTS

JSON_DIR = Path(__file__).parent / "json"


def render() -> dict[str, str]:
    """File name → JSON Schema text of each event model."""
    files: dict[str, str] = {}
    for model in ALL_EVENTS:
        event_type = model.model_fields["type"].default
        schema = model.model_json_schema(mode="serialization")
        schema["$id"] = f"https://chatbus.dev/schemas/{event_type}.json"
        files[f"{event_type}.json"] = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    return files


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of exported files that are missing, different or no longer produced."""
    expected = render()
    present = {p.name for p in directory.glob("*.json")} if directory.exists() else set()
    stale = [
        n
        for n, text in expected.items()
        if not (directory / n).exists() or (directory / n).read_text() != text
    ]
    stale += sorted(present - expected.keys())
    return sorted(stale)


def write(directory: Path = JSON_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    expected = render()
    for extra in set(p.name for p in directory.glob("*.json")) - expected.keys():
        (directory / extra).unlink()
    paths = []
    for name, text in expected.items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail when exported files are stale")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        if stale:
            print(
                f"stale JSON Schema files: {', '.join(stale)}; run `make schemas`", file=sys.stderr
            )
            return 1
        print("JSON Schema files are up to date")
        return 0
    for path in write():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
