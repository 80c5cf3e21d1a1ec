"""`file_search` over several vector stores (chat and `/v1/responses`): each store's collection
is searched and their passages merged; the sources say which store each came from; a store the
key's tenant does not see is answered as one that does not exist. The official `openai` client
against the app, a real embedded Chroma, the fake embedder, an engine behind
`httpx.MockTransport`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI

from ragtune.serving.app import create_app
from tests.support.documents import (
    ADMIN_KEY,
    BASE,
    GUIDE,
    PARCELS,
    STORE,
    fake_parts,
    openai_client,
    serving_settings,
)  # fmt: skip

SHIPPING = "shipping"


@pytest.fixture
def client(tmp_path: Path) -> Iterator[OpenAI]:
    app = create_app(serving_settings(tmp_path / "data"), open_parts=fake_parts)
    with TestClient(app) as test_client:
        yield openai_client(test_client)


def attach(client: OpenAI, store: str, name: str, content: bytes) -> None:
    client.vector_stores.create(name=store)
    done = client.vector_stores.files.upload_and_poll(vector_store_id=store, file=(name, content))
    assert done.status == "completed", done.last_error


def ask(client: OpenAI, question: str, stores: list[str]) -> dict[str, Any]:
    answer = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": question}],
        tools=[{"type": "file_search", "vector_store_ids": stores}],  # type: ignore[list-item]
    )
    info: dict[str, Any] = answer.model_extra["ragtune"]  # type: ignore[index]
    return info


def test_several_stores_are_searched_together_and_sources_name_their_store(
    client: OpenAI,
) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    attach(client, SHIPPING, "parcels.md", PARCELS)

    # Each question finds its passage in the store that holds it, searched with the other.
    for question, store, document in [
        ("How are invoices refunded?", STORE, "guide.md"),
        ("When are parcels shipped by courier?", SHIPPING, "parcels.md"),
    ]:
        info = ask(client, question, [STORE, SHIPPING])
        assert info["route"] == "rag"
        best = info["sources"][0]
        assert (best["collection"], best["document"]) == (store, document), info
        assert {s["collection"] for s in info["sources"]} <= {STORE, SHIPPING}
        # The passage the merged search put first is the one-store search's first.
        single = ask(client, question, [store])["sources"][0]
        assert (single["collection"], single["chunk_id"]) == (store, best["chunk_id"])

    # The same through ragtune's own extension, and through the Responses API's file_search.
    answer = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "When are parcels shipped by courier?"}],
        extra_body={"ragtune": {"collections": [STORE, SHIPPING]}},
    )
    sources = answer.model_extra["ragtune"]["sources"]  # type: ignore[index]
    assert sources[0]["collection"] == SHIPPING
    response = client.responses.create(
        model=BASE,
        input="When are parcels shipped by courier?",
        tools=[{"type": "file_search", "vector_store_ids": [STORE, SHIPPING]}],
    )
    assert response.model_extra["ragtune"]["sources"][0]["collection"] == SHIPPING  # type: ignore[index]


def test_every_store_named_must_exist_and_be_named_once(client: OpenAI) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    with pytest.raises(NotFoundError, match="'nowhere' does not exist"):
        ask(client, "How are invoices refunded?", [STORE, "nowhere"])
    with pytest.raises(BadRequestError, match="both set"):
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "How are invoices refunded?"}],
            extra_body={"ragtune": {"collection": STORE, "collections": [STORE]}},
        )
    with pytest.raises(BadRequestError, match="different collections"):
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "How are invoices refunded?"}],
            tools=[{"type": "file_search", "vector_store_ids": [STORE]}],  # type: ignore[list-item]
            extra_body={"ragtune": {"collections": [STORE, SHIPPING]}},
        )
    # A store named twice is searched once.
    assert ask(client, "How are invoices refunded?", [STORE, STORE])["sources"]


def test_a_store_of_another_tenant_is_one_that_does_not_exist(
    client: OpenAI, tmp_path: Path
) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    attach(client, SHIPPING, "parcels.md", PARCELS)
    admin = client.with_options(api_key=ADMIN_KEY)
    created = admin.post("/../admin/keys", body={"collections": [SHIPPING]}, cast_to=dict[str, Any])
    tenant = client.with_options(api_key=created["key"])
    with pytest.raises(NotFoundError) as refused:
        ask(tenant, "How are invoices refunded?", [SHIPPING, STORE])
    with pytest.raises(NotFoundError) as missing:
        ask(tenant, "How are invoices refunded?", [SHIPPING, "nowhere"])
    assert refused.value.body == {
        **missing.value.body,  # type: ignore[dict-item]
        "message": str(missing.value.body["message"]).replace("nowhere", STORE),  # type: ignore[index]
    }
    info = ask(tenant, "When are parcels shipped by courier?", [SHIPPING])
    assert {s["collection"] for s in info["sources"]} == {SHIPPING}
