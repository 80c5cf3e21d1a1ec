"""POST /v1/embeddings with real clients (the official `openai` package, LangChain's
OpenAIEmbeddings) against `ragtune serve` as its own process. The endpoint needs no engine: the
server is attached to an address where none answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from langchain_openai import OpenAIEmbeddings
from openai import NotFoundError, OpenAI

from ragtune.retrieval.embedder import Embedder
from ragtune.serving.engine.models import default_model_dir
from tests.support.cli import ragtune_serve
from tests.support.openai_schema import assert_openai_shape
from tests.support.servers import free_port

KEY = "embed-key"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TEXTS = ["How do I read a file line by line?", "Refunds take thirty days.", "x"]


@pytest.fixture(scope="module")
def server(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`ragtune serve` on an empty data directory, attached to an engine address where nothing
    listens (the served model's tokenizer is read from the prepared default model)."""
    data_dir = tmp_path_factory.mktemp("embeddings") / "data"
    with ragtune_serve(
        data_dir,
        free_port(),
        wait_ready=False,
        RAGTUNE_VLLM_URL=f"http://127.0.0.1:{free_port()}",
        RAGTUNE_MODEL=str(default_model_dir(models_dir)),
        RAGTUNE_API_KEYS=KEY,
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> OpenAI:
    return OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def post(server: str, body: dict[str, Any], key: str = KEY) -> httpx.Response:
    return httpx.post(
        f"{server}/v1/embeddings",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def test_openai_client_gets_the_embedders_vectors(client: OpenAI, real_embedder: Embedder) -> None:
    expected = real_embedder.embed(TEXTS)
    # The client's default: base64, decoded by the client.
    listed = client.embeddings.create(model=MODEL, input=TEXTS)
    assert [d.index for d in listed.data] == [0, 1, 2]
    for item, vector in zip(listed.data, expected, strict=True):
        assert item.embedding == pytest.approx(vector, abs=1e-5)
    tokens = sum(real_embedder.count_tokens(TEXTS))
    assert (listed.usage.prompt_tokens, listed.usage.total_tokens) == (tokens, tokens)
    assert listed.model == MODEL

    raw = client.embeddings.with_raw_response.create(
        model="all-MiniLM-L6-v2", input=TEXTS[0], encoding_format="float"
    )
    body = raw.http_response.json()
    assert_openai_shape("embedding.list", body)
    assert body["model"] == "all-MiniLM-L6-v2"
    assert body["data"][0]["embedding"] == pytest.approx(expected[0], abs=1e-5)


def test_langchain_openai_embeddings(server: str, real_embedder: Embedder) -> None:
    embeddings = OpenAIEmbeddings(
        model="all-MiniLM-L6-v2",
        base_url=f"{server}/v1",
        api_key=KEY,  # type: ignore[arg-type]
        check_embedding_ctx_length=False,
    )
    expected = real_embedder.embed(TEXTS)
    assert embeddings.embed_query(TEXTS[0]) == pytest.approx(expected[0], abs=1e-5)
    documents = embeddings.embed_documents(TEXTS)
    for got, vector in zip(documents, expected, strict=True):
        assert got == pytest.approx(vector, abs=1e-5)


def test_errors_say_what_to_do_in_openais_envelope(client: OpenAI, server: str) -> None:
    with pytest.raises(NotFoundError) as caught:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert MODEL in str(caught.value)

    cases = [
        ({"model": MODEL, "input": "word " * 300}, 400, "input[0] has"),
        ({"model": MODEL, "input": [[101, 2023, 102]]}, 400, "check_embedding_ctx_length"),
        ({"model": MODEL, "input": ""}, 400, "is empty"),
        ({"model": MODEL, "input": "a", "dimensions": 64}, 400, "384 dimensions"),
        ({"model": "nope", "input": "a"}, 404, MODEL),
    ]
    for body, status, message in cases:
        response = post(server, body)
        assert response.status_code == status, response.text
        assert_openai_shape("error", response.json())
        assert message in response.json()["error"]["message"]
    refused = post(server, {"model": MODEL, "input": "a"}, key="wrong")
    assert refused.status_code == 401
    assert_openai_shape("error", refused.json())


def test_the_embedding_model_is_listed(client: OpenAI, server: str) -> None:
    listed = httpx.get(
        f"{server}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30
    ).json()
    assert_openai_shape("model.list", listed)
    assert MODEL in {m.id for m in client.models.list()}
