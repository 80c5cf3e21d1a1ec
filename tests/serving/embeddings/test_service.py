"""The embeddings service over the fake embedder (a word is a token): what it accepts, what it
refuses with which message, and the response it builds. Milliseconds, no model."""

from __future__ import annotations

import base64
import struct
from typing import Any

import anyio
import pytest

from ragtune.serving.embeddings.protocol import EmbeddingRequest
from ragtune.serving.embeddings.service import EmbeddingService
from ragtune.serving.errors import EmbeddingModelNotFoundError, InvalidRequestError
from tests.support.fakes import FakeEmbedder
from tests.support.openai_schema import assert_openai_shape


@pytest.fixture
def service() -> EmbeddingService:
    return EmbeddingService(FakeEmbedder(dimension=8, max_tokens=6, batch_size=2), max_inputs=4)


def create(service: EmbeddingService, **fields: Any) -> dict[str, Any]:
    request = EmbeddingRequest.model_validate({"model": service.model, **fields})
    response = anyio.run(service.create, request)
    body: dict[str, Any] = response.model_dump(mode="json")
    return body


def refused(service: EmbeddingService, **fields: Any) -> InvalidRequestError:
    with pytest.raises(InvalidRequestError) as caught:
        create(service, **fields)
    return caught.value


def test_a_list_is_embedded_in_its_order_with_the_models_token_counts(
    service: EmbeddingService,
) -> None:
    texts = ["a text of words", "short", "two words", "one more text"]
    body = create(service, input=texts)
    assert_openai_shape("embedding.list", body)
    embedder = service.embedder
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    assert [d["embedding"] for d in body["data"]] == embedder.embed(texts)
    tokens = sum(embedder.count_tokens(texts))  # the special tokens too, as the model reads
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["model"] == service.model


def test_a_string_is_one_input_and_base64_is_little_endian_float32(
    service: EmbeddingService,
) -> None:
    body = create(service, input="refunds within thirty days", encoding_format="base64")
    (item,) = body["data"]
    raw = base64.b64decode(item["embedding"])
    decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
    expected = service.embedder.embed(["refunds within thirty days"])[0]
    assert decoded == pytest.approx(expected, abs=1e-7)


def test_the_model_is_named_by_its_recorded_id_or_its_last_part() -> None:
    embedder = FakeEmbedder(dimension=8)
    embedder.model_id = "sentence-transformers/all-MiniLM-L6-v2"
    service = EmbeddingService(embedder, max_inputs=4)
    for name in ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        assert create(service, model=name, input="x")["model"] == name
    with pytest.raises(EmbeddingModelNotFoundError, match="sentence-transformers/all-MiniLM-L6-v2"):
        create(service, model="text-embedding-3-small", input="x")


def test_an_input_longer_than_the_model_reads_is_refused_by_index(
    service: EmbeddingService,
) -> None:
    error = refused(service, input=["fine", "one two three four five"])
    assert error.param == "input"
    assert "input[1] has 7 tokens" in str(error)
    assert "at most 6" in str(error)


def test_token_ids_are_refused_with_what_to_send_instead(service: EmbeddingService) -> None:
    for tokens in ([101, 2023, 102], [[101, 2023, 102]]):
        error = refused(service, input=tokens)
        assert "send the text" in str(error)
        assert "check_embedding_ctx_length=False" in str(error)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input": []}, "empty list"),
        ({"input": ""}, "input[0] is empty"),
        ({"input": ["a", "  "]}, "input[1] is empty"),
        ({"input": ["a"] * 5}, "at most 4 per request"),
        ({"input": "a", "dimensions": 4}, "dimensions 4"),
        ({"input": "bad \ud800 text"}, "surrogate"),
    ],
)
def test_bad_inputs_are_refused_with_a_message(
    service: EmbeddingService, fields: dict[str, Any], message: str
) -> None:
    assert message in str(refused(service, **fields))


def test_dimensions_equal_to_the_models_are_accepted(service: EmbeddingService) -> None:
    body = create(service, input="a", dimensions=8, user="someone")
    assert len(body["data"][0]["embedding"]) == 8
