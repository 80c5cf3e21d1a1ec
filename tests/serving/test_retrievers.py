"""Merging several collections' hits (`merge_ranked`): interleaved by rank, evidence first."""

from __future__ import annotations

from ragtune.retrieval.search import SearchHit
from ragtune.serving.retrievers import merge_ranked


def hits(collection: str, *dense: float) -> list[SearchHit]:
    return [
        SearchHit(
            rank=n,
            chunk_id=f"{collection}-{n}",
            text="",
            source="",
            section="",
            score=1.0 / n,
            metadata={},
            dense_score=similarity,
            collection=collection,
        )
        for n, similarity in enumerate(dense, start=1)
    ]


def ids(merged: list[SearchHit]) -> list[str]:
    return [hit.chunk_id for hit in merged]


def test_one_collection_is_kept_as_it_is() -> None:
    one = hits("a", 0.2, 0.9, 0.5)
    assert merge_ranked([one], 2) == one[:2]


def test_lists_interleave_by_rank_the_closer_hit_first_within_a_rank() -> None:
    merged = merge_ranked([hits("a", 0.5, 0.45, 0.44), hits("b", 0.6, 0.4, 0.39)], 5)
    assert ids(merged) == ["b-1", "a-1", "a-2", "b-2", "a-3"]
    assert [hit.rank for hit in merged] == [1, 2, 3, 4, 5]


def test_a_collection_without_evidence_does_not_push_out_another_s() -> None:
    relevant, unrelated = hits("a", 0.6, 0.5, 0.45, 0.4), hits("b", 0.3, 0.2, 0.1, 0.1)
    merged = merge_ranked([unrelated, relevant], 5, threshold=0.37)
    assert ids(merged) == ["a-1", "a-2", "a-3", "a-4", "b-1"]
    # Without a threshold, ranks alone decide.
    assert ids(merge_ranked([unrelated, relevant], 4)) == ["a-1", "b-1", "a-2", "b-2"]
