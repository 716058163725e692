"""Nearest-neighbour votes: what the most similar training texts were labelled.

A linear head draws one boundary per category through all the training data; a text close to a
few training examples of a kind it has never seen the like of in bulk (a harm phrased one rare
way, a look-alike that differs from an unsafe request by a few words) is judged better by those
examples themselves. Each vote is the similarity-weighted share of the ``k`` most similar
training texts labelled with each category, by two similarities: the cosine of the sentence
embeddings (meaning) and the cosine of the lexical TF-IDF rows (wording, spelling, other
languages). The classifier averages both votes with the linear heads' probabilities.

Measured before it was kept (seed-only heads judged on the evaluation set's train split, which
they never saw; ``docs/moderation.md``): ROC AUC of the highest score 0.981 → 0.991.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Matrix = npt.NDArray[np.float32]

K = 5
EMBEDDING_POWER = 4.0  # similarity weights sharpened: the closest neighbours count most
LEXICAL_POWER = 2.0


def _vote(similarity: npt.NDArray[Any], labels: Matrix, k: int, power: float) -> Matrix:
    """Per row, the share of the ``k`` most similar examples with each label, weighted by
    similarity ** power (negative similarities count nothing)."""
    k = min(k, similarity.shape[1])
    top = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    weights = np.maximum(np.take_along_axis(similarity, top, axis=1), 0.0) ** power
    votes = (labels[top] * weights[..., None]).sum(axis=1)
    return (votes / (weights.sum(axis=1)[:, None] + 1e-9)).astype(np.float32)


def _unit_rows(rows: Any) -> Any:
    from sklearn.preprocessing import normalize

    return normalize(rows)


@dataclass(frozen=True)
class NeighbourVotes:
    """The training texts' embeddings, lexical rows and labels, and the votes they give.

    Both banks are kept transposed (a column per example), the lexical one as CSR: a query's
    sparse row times it costs ~3 ms for a request's texts, against ~36 ms the other way round."""

    vectors_t: Matrix  # (embedding dim, examples): L2-normalised columns
    lexical_t: Any  # (n-grams, examples): sparse CSR, L2-normalised columns
    labels: Matrix  # (examples, categories), 0 or 1
    k: int = K

    @classmethod
    def fit(cls, vectors: Matrix, lexical_rows: Any, labels: Matrix, k: int = K) -> NeighbourVotes:
        return cls(
            np.ascontiguousarray(vectors.T, dtype=np.float32),
            _unit_rows(lexical_rows).astype(np.float32).T.tocsr(),
            labels.astype(np.float32),
            k,
        )

    def votes(self, vectors: Matrix, lexical_rows: Any) -> tuple[Matrix, Matrix]:
        """(embedding vote, lexical vote), each (texts, categories) in [0, 1]."""
        by_meaning = _vote(vectors @ self.vectors_t, self.labels, self.k, EMBEDDING_POWER)
        wording = (_unit_rows(lexical_rows).astype(np.float32) @ self.lexical_t).toarray()
        by_wording = _vote(wording, self.labels, self.k, LEXICAL_POWER)
        return by_meaning, by_wording
