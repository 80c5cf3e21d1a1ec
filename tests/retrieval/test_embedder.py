"""The real embedding model, loaded offline from its PyPI package."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from ragtune.retrieval.embedder import (
    Embedder,
    folder_fingerprint,
    model_id_for,
    resolve_model_path,
    same_model,
)
from ragtune.retrieval.errors import ChunkTooLongError
from tests.support.fakes import FakeEmbedder


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_default_model_loads_offline(real_embedder: Embedder) -> None:
    assert real_embedder.model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert real_embedder.dimension == 384
    assert real_embedder.max_tokens == 256
    assert model_id_for("all-MiniLM-L6-v2") == real_embedder.model_id
    # Named by its installed folder it is the same model (its collections were refused as
    # another model's, "model@a0bcc0c748d5").
    installed = Path(resolve_model_path("all-MiniLM-L6-v2")).resolve()
    assert model_id_for(str(installed)) == real_embedder.model_id
    # ... and what it was recorded as before (its folder's name and fingerprint) still opens
    # with it: collections, tuned collections' base models, router files.
    before = f"{installed.name}@{folder_fingerprint(installed)}"
    assert same_model(before, real_embedder.model_id)
    assert same_model(installed.name, real_embedder.model_id)  # recorded before fingerprints
    assert not same_model(f"{installed.name}@0123456789ab", real_embedder.model_id)
    assert not same_model(before, "other/model")


def test_a_model_folders_identity_is_its_name_and_what_it_holds(tmp_path: Path) -> None:
    """Two folders of one name holding different models (another pooling; weights tuned from
    the same base) are two identities; a copy of a folder elsewhere is the same model."""
    first = tmp_path / "v1" / "model"
    (first / "1_Pooling").mkdir(parents=True)
    (first / "config.json").write_text('{"hidden_size": 384}')
    (first / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    weights = bytes(range(256)) * 8192  # 2 MiB: sampled, not read whole
    (first / "model.safetensors").write_bytes(weights)
    (first / ".cache").mkdir()
    (first / ".cache" / "lock.json").write_text("ignored")
    identity = model_id_for(str(first))
    assert identity.startswith("model@")
    assert len(identity) == len("model@") + 12
    copy = tmp_path / "elsewhere" / "model"
    shutil.copytree(first, copy, ignore=shutil.ignore_patterns(".cache"))
    assert model_id_for(str(copy)) == identity
    pooled = tmp_path / "v2" / "model"
    shutil.copytree(first, pooled)
    (pooled / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert model_id_for(str(pooled)) != identity
    tuned = tmp_path / "v3" / "model"
    shutil.copytree(first, tuned)
    changed = bytearray(weights)
    changed[len(weights) // 4 + 7] ^= 1  # one byte anywhere: a bias tuned alone
    (tuned / "model.safetensors").write_bytes(bytes(changed))
    assert model_id_for(str(tuned)) != identity
    # What the model never loads is no other model: a README, an ONNX export beside it.
    (copy / "README.md").write_text("# My model")
    (copy / "onnx").mkdir()
    (copy / "onnx" / "model.onnx").write_bytes(b"exported")
    (copy / "onnx" / "config.json").write_text("{}")
    assert model_id_for(str(copy)) == identity


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
