"""Nearest-neighbour votes: a text scores what its most similar training texts were labelled."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from stream_processors.moderation.neighbours import NeighbourVotes


def unit(*rows: list[float]) -> np.ndarray:
    matrix = np.array(rows, dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


# three training texts: two labelled with the first category, one with none
VECTORS = unit([1, 0, 0], [0.9, 0.1, 0], [0, 1, 0])
LEXICAL = sp.csr_matrix(unit([1, 0], [1, 0.2], [0, 1]))
LABELS = np.array([[1, 0], [1, 0], [0, 0]], dtype=np.float32)


def test_a_text_next_to_labelled_examples_gets_their_label_by_meaning_and_by_wording() -> None:
    votes = NeighbourVotes.fit(VECTORS, LEXICAL, LABELS, k=2)
    by_meaning, by_wording = votes.votes(unit([1, 0.05, 0]), sp.csr_matrix(unit([1, 0.1])))
    assert by_meaning[0, 0] > 0.99 and by_meaning[0, 1] == 0.0
    assert by_wording[0, 0] > 0.99 and by_wording[0, 1] == 0.0


def test_the_closest_neighbours_weigh_most() -> None:
    votes = NeighbourVotes.fit(VECTORS, LEXICAL, LABELS, k=3)
    near_the_unlabelled = unit([0.3, 1, 0])
    by_meaning, _ = votes.votes(near_the_unlabelled, sp.csr_matrix(unit([0, 1])))
    assert 0.0 < by_meaning[0, 0] < 0.1  # two labelled neighbours, far: they count little


def test_dissimilar_examples_give_no_vote() -> None:
    votes = NeighbourVotes.fit(VECTORS, LEXICAL, LABELS, k=2)
    by_meaning, by_wording = votes.votes(unit([0, 0, 1]), sp.csr_matrix((1, 2), dtype=np.float32))
    assert by_meaning.max() == 0.0 and by_wording.max() == 0.0
