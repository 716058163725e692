"""The pluggable classifier: anything that maps a text to a score per category."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from chatbus.settings import Settings
from stream_processors.moderation.categories import CATEGORIES, CategoryScores


@runtime_checkable
class Classifier(Protocol):
    """Scores in [0, 1] for every category of the taxonomy (blocking; run it off the loop)."""

    name: str

    def classify(self, text: str) -> CategoryScores: ...


class HybridClassifier:
    """The highest score any of its classifiers gives a category (rules OR embedding)."""

    def __init__(self, parts: Sequence[Classifier]) -> None:
        self._parts = tuple(parts)
        self.name = "+".join(p.name for p in self._parts)

    def classify(self, text: str) -> CategoryScores:
        return self.classify_all([text])[0]

    def classify_all(self, texts: Sequence[str]) -> list[CategoryScores]:
        out = [dict.fromkeys(CATEGORIES, 0.0) for _ in texts]
        for part in self._parts:
            for scores, found in zip(out, classify_all(part, texts), strict=True):
                for category, score in found.items():
                    if category in scores and score > scores[category]:
                        scores[category] = score
        return out


def classify_all(classifier: Classifier, texts: Sequence[str]) -> list[CategoryScores]:
    """The scores of each of ``texts``: in one batch where the classifier batches (the embedding
    heads encode every text in one call of the model), else one text at a time."""
    batch = getattr(classifier, "classify_all", None)
    if batch is not None:
        return list(batch(texts))
    return [classifier.classify(text) for text in texts]


def build_classifier(settings: Settings) -> Classifier:
    """The classifier ``settings.moderation.classifier`` names; loads and trains what it needs."""
    from stream_processors.moderation.rules import RuleClassifier

    rules = RuleClassifier()
    if settings.moderation.classifier == "rules":
        return rules
    from stream_processors.moderation.calibrate import training_examples
    from stream_processors.moderation.embedding import (
        EmbeddingClassifier,
        MiniLMEncoder,
        load_or_train_heads,
    )
    from stream_processors.moderation.evalset import load_evalset, split_of
    from stream_processors.moderation.seed import load_seed

    # the data the thresholds were calibrated for: the seed set and the evaluation train split
    examples = training_examples(load_seed(), split_of(load_evalset(), "train"))
    encoder = MiniLMEncoder("cpu", threads=settings.moderation.threads)
    embedding = EmbeddingClassifier(
        encoder, load_or_train_heads(encoder, examples, settings.cache_dir)
    )
    if settings.moderation.classifier == "embedding":
        return embedding
    return HybridClassifier([rules, embedding])
