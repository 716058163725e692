"""Where a fine-tuning set lives: its training and validation files and its data card.

``--dataset`` names either one ``.jsonl`` file or a folder holding ``train.jsonl`` (and
``validation.jsonl``) with a ``data_card.json`` or ``data_card.md`` beside them, as the Spark
dataset job writes it. A ``.jsonl`` that is itself a folder of part files (Spark's own output
layout: ``part-00000-….json``, ``_SUCCESS``, ``.crc`` files) is read part by part, in name order.
A data card next to a single file is taken too, and so is ``validation.jsonl`` next to a file
called ``train.jsonl``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbus.logging import get_logger
from inference_consumers.training.errors import TrainingDataError

__all__ = ["DATA_CARD_FILES", "DatasetSource", "locate_dataset"]

log = get_logger(__name__)

TRAIN_FILE = "train.jsonl"
VALIDATION_FILE = "validation.jsonl"
DATA_CARD_FILES = ("data_card.json", "data_card.md")


@dataclass(frozen=True)
class DatasetSource:
    """The files of one fine-tuning set, resolved."""

    path: Path
    train_files: tuple[Path, ...]
    validation_files: tuple[Path, ...] = ()
    data_card_path: Path | None = None
    # A JSON card's object, a Markdown card's text (or a JSON card that does not parse, as text).
    data_card: dict[str, Any] | str | None = None


def locate_dataset(path: Path, validation: Path | None = None) -> DatasetSource:
    """The files of the set at ``path``; ``validation`` (a file or folder) replaces the
    validation split found beside it. Raises :class:`TrainingDataError` when nothing is there."""
    path = path.expanduser().absolute()
    if not path.exists():
        raise TrainingDataError(
            f"no dataset at {path}: --dataset takes a .jsonl file or a folder holding "
            f"{TRAIN_FILE} (and {VALIDATION_FILE})"
        )
    if path.is_dir() and ((path / TRAIN_FILE).exists() or not _is_spark_output(path)):
        train = path / TRAIN_FILE
        if not train.exists():
            found = sorted(p.name for p in path.iterdir())[:10]
            raise TrainingDataError(
                f"{path} holds no {TRAIN_FILE} (it holds {', '.join(found) or 'nothing'}): "
                f"--dataset takes a .jsonl file or a folder with {TRAIN_FILE} in it"
            )
        folder = path
        validation_found: Path | None = path / VALIDATION_FILE
    else:  # one file, or one table of part files
        train = path
        folder = path.parent
        validation_found = folder / VALIDATION_FILE if path.name == TRAIN_FILE else None
    if validation is not None:
        validation = validation.expanduser().absolute()
        if not validation.exists():
            raise TrainingDataError(f"no validation set at {validation} (--validation)")
        validation_found = validation
    validation_files = (
        _jsonl_files(validation_found)
        if validation_found is not None and validation_found.exists()
        else ()
    )
    card_path, card = _data_card(folder)
    return DatasetSource(
        path=path,
        train_files=_jsonl_files(train),
        validation_files=validation_files,
        data_card_path=card_path,
        data_card=card,
    )


def _is_spark_output(folder: Path) -> bool:
    """A folder that is one JSON-lines table written by Spark (``train.jsonl/part-…``)."""
    return folder.suffix in (".jsonl", ".json") or (folder / "_SUCCESS").exists()


def _jsonl_files(path: Path) -> tuple[Path, ...]:
    if path.is_file():
        return (path,)
    parts = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and not p.name.startswith(("_", ".")) and not p.name.endswith(".crc")
    )
    if not parts:
        raise TrainingDataError(f"{path} is a folder with no data files in it (no part-* files)")
    return tuple(parts)


def _data_card(folder: Path) -> tuple[Path | None, dict[str, Any] | str | None]:
    for name in DATA_CARD_FILES:
        card = folder / name
        if not card.is_file():
            continue
        text = card.read_text(encoding="utf-8", errors="replace")
        if card.suffix != ".json":
            return card, text
        try:
            data = json.loads(text)
        except ValueError as exc:
            log.warning("data_card_unreadable", path=str(card), reason=str(exc))
            return card, text
        return card, data if isinstance(data, dict) else {"card": data}
    return None, None
