"""The real embedding model, loaded offline from its PyPI package."""

from __future__ import annotations

import math

import pytest

from ragtune.retrieval.embedder import Embedder, model_id_for
from ragtune.retrieval.errors import ChunkTooLongError
from tests.support.fakes import FakeEmbedder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_default_model_loads_offline(real_embedder: Embedder) -> None:
    assert real_embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert real_embedder.dimension == 384
    assert real_embedder.max_tokens == 256
    assert model_id_for("all-MiniLM-L6-v2") == real_embedder.model_id


def test_vectors_are_unit_length_and_meaningful(real_embedder: Embedder) -> None:
    cat, kitten, tax = real_embedder.embed(
        ["The cat sat on the mat.", "A kitten is sitting on a rug.", "File your tax return."]
    )
    assert math.isclose(math.sqrt(cosine(cat, cat)), 1.0, abs_tol=1e-5)
    assert cosine(cat, kitten) > cosine(cat, tax) + 0.2


def test_batching_keeps_the_order_of_texts(real_embedder: Embedder) -> None:
    texts = [f"{'word ' * n}number {n}" for n in (30, 2, 17, 5, 60, 1, 9, 44, 3)]
    together = real_embedder.embed(texts)
    alone = [real_embedder.embed([t])[0] for t in texts]
    for a, b in zip(together, alone, strict=True):
        assert cosine(a, b) == pytest.approx(1.0, abs=1e-4)


def test_a_text_the_model_would_truncate_is_refused(real_embedder: Embedder) -> None:
    with pytest.raises(ChunkTooLongError, match="256-token input"):
        real_embedder.embed(["short", "word " * 300])


def test_the_fake_batches_through_the_same_base() -> None:
    fake = FakeEmbedder(batch_size=3)
    vectors = fake.embed(["a b", "c", "d e f", "g", "h i", "j"])
    assert len(vectors) == 6
    assert fake.calls == [3, 3]
    assert vectors[0] == fake.embed(["a b"])[0]
