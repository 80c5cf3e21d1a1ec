"""`file_search` over several vector stores (chat and `/v1/responses`): each store's collection
is searched and their passages merged; the sources say which store each came from; a store the
key's tenant does not see is answered as one that does not exist. The tool's filters restrict
the passages; what it asks and cannot be served, and an empty store or collection name, are
400s naming the field; a tool_choice of the search alone is the search. The official `openai` client
against the app, a real embedded Chroma, the fake embedder, an engine behind
`httpx.MockTransport`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI

from ragtune.serving.app import create_app
from ragtune.serving.errors import InvalidRequestError
from tests.support.documents import (
    ADMIN_KEY,
    BASE,
    GUIDE,
    PARCELS,
    STORE,
    components_of,
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


HOLIDAYS = {"type": "eq", "key": "section", "value": "Holidays"}
BOTH = "How are invoices refunded and when is the office closed?"


def test_the_tools_filters_restrict_the_passages_the_answer_is_given(client: OpenAI) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    tool: dict[str, Any] = {"type": "file_search", "vector_store_ids": [STORE]}
    unfiltered = ask(client, BOTH, [STORE])["sources"]
    assert {s["section"] for s in unfiltered} > {"Holidays"}  # both sections, unfiltered

    filtered = {**tool, "filters": HOLIDAYS}
    answer = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": BOTH}],
        tools=[filtered],  # type: ignore[list-item]
    )
    sources = answer.model_extra["ragtune"]["sources"]  # type: ignore[index]
    assert sources
    assert {s["section"] for s in sources} == {"Holidays"}
    # The same filters through the Responses API, joined by `and`; its results say so too.
    joined = {
        "type": "and",
        "filters": [HOLIDAYS, {"type": "eq", "key": "source", "value": "guide.md"}],
    }
    response = client.responses.create(
        model=BASE,
        input=BOTH,
        tools=[{**tool, "filters": joined}],  # type: ignore[list-item]
        include=["file_search_call.results"],
    )
    assert {s["section"] for s in response.model_extra["ragtune"]["sources"]} == {"Holidays"}  # type: ignore[index]
    search = response.output[0]
    assert search.type == "file_search_call"
    assert search.results
    assert {r.attributes["section"] for r in search.results} == {"Holidays"}  # type: ignore[index]
    # ragtune's own filters, when they say the same, change nothing; different ones are a 400.
    same = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": BOTH}],
        tools=[filtered],  # type: ignore[list-item]
        extra_body={"ragtune": {"filters": {"section": "Holidays"}}},
    )
    assert same.model_extra["ragtune"]["sources"] == sources  # type: ignore[index]
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": BOTH}],
            tools=[filtered],  # type: ignore[list-item]
            extra_body={"ragtune": {"filters": {"source": "guide.md"}}},
        )
    assert refused.value.body["param"] == "ragtune.filters"  # type: ignore[index]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"filters": {"type": "gt", "key": "year", "value": 2020}}, "tools[0].filters"),
        ({"filters": {"type": "and", "filters": []}}, "tools[0].filters"),
        ({"filters": {"type": "eq", "key": "$where", "value": "x"}}, "tools[0].filters"),
        ({"filters": "section=Holidays"}, "tools[0].filters"),
        ({"max_num_results": 0}, "tools[0].max_num_results"),
        ({"max_num_results": 51}, "tools[0].max_num_results"),
        ({"max_num_results": "3"}, "tools[0].max_num_results"),
        ({"max_num_results": True}, "tools[0].max_num_results"),
        ({"ranking_options": {"score_threshold": 2}}, "tools[0].ranking_options.score_threshold"),
        (
            {"ranking_options": {"score_threshold": -0.1}},
            "tools[0].ranking_options.score_threshold",
        ),
        ({"ranking_options": {"rerank": "x"}}, "tools[0].ranking_options"),
        ({"ranking_options": "best"}, "tools[0].ranking_options"),
        ({"vector_store_ids": [""]}, "tools[0].vector_store_ids"),
        ({"vector_store_ids": [" ", STORE]}, "tools[0].vector_store_ids"),
    ],
)
def test_what_the_tool_asks_and_cannot_be_served_is_refused_by_name(
    client: OpenAI, fields: dict[str, Any], param: str
) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    tool = {"type": "file_search", "vector_store_ids": [STORE], **fields}
    with pytest.raises(BadRequestError) as chat:
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": BOTH}],
            tools=[tool],  # type: ignore[list-item]
        )
    assert chat.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(BadRequestError) as responses:
        client.responses.create(model=BASE, input=BOTH, tools=[tool])  # type: ignore[list-item]
    assert responses.value.body == chat.value.body


def test_the_tool_bounds_how_many_passages_and_how_close_as_openai_does(
    client: OpenAI,
) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    attach(client, STORE, "parcels.md", PARCELS)
    tool: dict[str, Any] = {"type": "file_search", "vector_store_ids": [STORE]}

    def results(**fields: Any) -> list[tuple[str, float]]:
        response = client.responses.create(
            model=BASE,
            input=BOTH,
            tools=[{**tool, **fields}],  # type: ignore[list-item]
            include=["file_search_call.results"],
        )
        search = response.output[0]
        assert search.type == "file_search_call"
        found = [(r.text or "", r.score or 0.0) for r in search.results or []]
        assert len(found) == len(response.model_extra["ragtune"]["sources"])  # type: ignore[index]
        return found

    every = results()
    assert len(every) >= 2
    assert results(max_num_results=1) == every[:1]  # the first in retrieval's order
    assert results(max_num_results=50) == every
    threshold = max(score for _, score in every)
    closest = [(text, score) for text, score in every if score >= threshold]
    assert len(closest) < len(every)
    assert results(ranking_options={"score_threshold": threshold}) == closest
    assert results(ranking_options={"score_threshold": 1}) == []  # no passage is the question
    # The same over chat completions.
    answer = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": BOTH}],
        tools=[{**tool, "max_num_results": 2}],  # type: ignore[list-item]
    )
    assert len(answer.model_extra["ragtune"]["sources"]) == 2  # type: ignore[index]


def test_a_ranker_and_a_zero_threshold_change_nothing(client: OpenAI) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    tool = {
        "type": "file_search",
        "vector_store_ids": [STORE],
        "ranking_options": {"ranker": "auto", "score_threshold": 0},
    }
    answer = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": BOTH}],
        tools=[tool],  # type: ignore[list-item]
    )
    assert answer.model_extra["ragtune"]["sources"] == ask(client, BOTH, [STORE])["sources"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("ragtune", "param"),
    [
        ({"collection": ""}, "ragtune.collection"),
        ({"collection": "  "}, "ragtune.collection"),
        ({"collections": ["", "default"]}, "ragtune.collections"),
        ({"collections": [STORE, "\t"]}, "ragtune.collections"),
    ],
)
def test_an_empty_collection_name_is_refused_never_read_as_the_default(
    client: OpenAI, ragtune: dict[str, Any], param: str
) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    with pytest.raises(BadRequestError) as refused:
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "How are invoices refunded?"}],
            extra_body={"ragtune": ragtune},
        )
    assert refused.value.body["param"] == param  # type: ignore[index]
    with pytest.raises(BadRequestError):
        client.responses.create(
            model=BASE, input="How are invoices refunded?", extra_body={"ragtune": ragtune}
        )


def test_the_retrievers_take_an_empty_name_for_no_collection(tmp_path: Path) -> None:
    app = create_app(serving_settings(tmp_path / "data"), open_parts=fake_parts)
    with TestClient(app) as test_client:
        retrievers = components_of(test_client).retrievers
        with pytest.raises(InvalidRequestError):
            retrievers.get("")
        with pytest.raises(InvalidRequestError):
            retrievers.search("refunds", [1.0], k=1, collection="")


@pytest.mark.parametrize("choice", ["auto", "required", {"type": "file_search"}])
def test_a_choice_of_the_search_with_no_other_tool_is_the_search(
    client: OpenAI, choice: Any
) -> None:
    attach(client, STORE, "guide.md", GUIDE)
    tools: Any = [{"type": "file_search", "vector_store_ids": [STORE]}]
    expected = ask(client, "How are invoices refunded?", [STORE])["sources"]
    answer = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "How are invoices refunded?"}],
        tools=tools,
        tool_choice=choice,
    )
    assert answer.model_extra["ragtune"]["sources"] == expected  # type: ignore[index]
    response = client.responses.create(
        model=BASE, input="How are invoices refunded?", tools=tools, tool_choice=choice
    )
    assert response.model_extra["ragtune"]["sources"] == expected  # type: ignore[index]
    echoed = response.tool_choice
    assert (echoed if isinstance(echoed, str) else echoed.model_dump(exclude_none=True)) == choice


def test_a_choice_of_the_search_needs_the_search(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as responses:
        client.responses.create(
            model=BASE, input="How are invoices refunded?", tool_choice={"type": "file_search"}
        )
    assert responses.value.body["param"] == "tool_choice"  # type: ignore[index]
    with pytest.raises(BadRequestError) as chat:
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "How are invoices refunded?"}],
            tool_choice={"type": "file_search"},  # type: ignore[typeddict-item]
        )
    assert chat.value.body["param"] == "tool_choice"  # type: ignore[index]


class PreferringParcels:
    """A reranker that puts the passage about parcels first, whatever the question."""

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        return [1.0 if "Parcels" in passage else 0.0 for passage in passages]


def test_a_reranker_reorders_the_evidence_and_never_pushes_it_out(tmp_path: Path) -> None:
    """A reranker ranks a passage below the evidence threshold first: the answer is still given
    the passages that reach it (before, the search stopped at RAGTUNE_RAG_TOP_K reranked
    passages, none of them evidence, and the route said the documents did not match)."""
    settings = serving_settings(tmp_path / "data")
    settings.router.rag_top_k = 1
    app = create_app(settings, open_parts=fake_parts)
    with TestClient(app) as test_client:
        client = openai_client(test_client)
        client.vector_stores.create(name=STORE)
        for name, content in (("guide.md", GUIDE), ("parcels.md", PARCELS)):
            client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=(name, content))
        question = "How are invoices refunded?"
        unranked = ask(client, question, [STORE])["sources"]
        assert [s["document"] for s in unranked] == ["guide.md"]
        components_of(test_client).retrievers.reranker = PreferringParcels()
        components_of(test_client).retrievers.forget(STORE)  # its retriever made anew, reranking
        reranked = ask(client, question, [STORE])
        assert [s["document"] for s in reranked["sources"]] == ["guide.md"]
        assert reranked["route"] == "rag"
