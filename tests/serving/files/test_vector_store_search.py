"""`POST /v1/vector_stores/{id}/search` with the official `openai` client: the store's passages
as chat's retrieval finds them, each with the file it came from; filters, thresholds, several
queries; a store the key does not see answers as a missing one. A real embedded Chroma, the
fake embedder, an engine behind `httpx.MockTransport`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI, UnprocessableEntityError

from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.serving.vector_stores.protocol import metadata_filters
from tests.support.documents import (
    ADMIN_KEY,
    GUIDE,
    KEY,
    PARCELS,
    STORE,
    components_of,
)  # fmt: skip


def test_search_finds_the_passage_and_names_its_file(with_store: tuple[OpenAI, TestClient]) -> None:
    client, _ = with_store
    guide = client.vector_stores.files.upload_and_poll(
        vector_store_id=STORE, file=("team/guide.md", GUIDE)
    )
    client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=("p.md", PARCELS))
    page = client.vector_stores.search(STORE, query="How are invoices refunded?")
    best = page.data[0]
    assert (best.file_id, best.filename) == (guide.id, "team/guide.md")
    assert "thirty days" in best.content[0].text
    assert 0 < best.score <= 1
    assert best.attributes is not None
    assert best.attributes["heading"] == "Refunds"
    assert page.model_extra is not None
    assert page.model_extra["search_query"] == ["How are invoices refunded?"]
    # Scores come in ragtune's order; a threshold leaves out what is below it.
    top = client.vector_stores.search(
        STORE,
        query="How are invoices refunded?",
        ranking_options={"score_threshold": best.score},
        max_num_results=1,
    )
    assert [r.file_id for r in top.data] == [guide.id]
    # Several queries: each passage once, the best of each query first.
    both = client.vector_stores.search(
        STORE, query=["How are invoices refunded?", "When are parcels shipped by courier?"]
    )
    texts = [r.content[0].text for r in both.data]
    assert len(texts) == len(set(texts))
    assert "thirty days" in texts[0] or "thirty days" in texts[1]
    assert any("next working day" in t for t in texts[:2])


def test_filters_and_bad_requests(with_store: tuple[OpenAI, TestClient], tmp_path: Path) -> None:
    client, _ = with_store
    client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=("guide.md", GUIDE))
    only_holidays = client.vector_stores.search(
        STORE, query="office closed", filters={"type": "eq", "key": "section", "value": "Holidays"}
    )
    assert only_holidays.data
    assert {r.attributes["section"] for r in only_holidays.data if r.attributes} == {"Holidays"}
    both = client.vector_stores.search(
        STORE,
        query="office closed",
        filters={"type": "and", "filters": [
            {"type": "eq", "key": "section", "value": "Holidays"},
            {"type": "eq", "key": "source", "value": "guide.md"},
        ]},
    )  # fmt: skip
    assert [r.attributes["section"] for r in both.data if r.attributes] == ["Holidays"]
    elsewhere = client.vector_stores.search(
        STORE,
        query="office closed",
        filters={"type": "and", "filters": [
            {"type": "eq", "key": "section", "value": "Holidays"},
            {"type": "eq", "key": "source", "value": "other.md"},
        ]},
    )  # fmt: skip
    assert elsewhere.data == []
    # `source` matches the name the client sees, never the server's path of the upload.
    for hidden in (f"{tmp_path}*", "/*", "*/files/*", "file-*"):
        server_path = client.vector_stores.search(
            STORE, query="office closed", filters={"type": "eq", "key": "source", "value": hidden}
        )
        assert server_path.data == [], hidden
    for filters in (
        {"type": "gt", "key": "year", "value": 2020},
        {"type": "or", "filters": []},
        {"type": "eq", "key": "$where", "value": "x"},
        {"type": "eq", "key": "source", "value": "[" * 16_000},  # no 15 s of CPU to read it
        {"type": "and", "filters": [REFUNDS, HOLIDAYS]},  # never read as the last of them
    ):
        with pytest.raises(BadRequestError) as refused:
            client.vector_stores.search(STORE, query="refunds", filters=filters)  # type: ignore[arg-type]
        assert refused.value.param == "filters"
    with pytest.raises(BadRequestError, match="query"):
        client.vector_stores.search(STORE, query=["  "])
    with pytest.raises(UnprocessableEntityError, match="max_num_results"):
        client.vector_stores.search(STORE, query="refunds", max_num_results=51)
    # A ranking option ragtune does not serve is refused, as a file_search tool refuses it.
    with pytest.raises(UnprocessableEntityError, match="hybrid_search is not supported") as hybrid:
        client.vector_stores.search(
            STORE,
            query="refunds",
            ranking_options={"hybrid_search": {"embedding_weight": 1, "text_weight": 0}},  # type: ignore[typeddict-unknown-key]
        )
    assert hybrid.value.body["param"] == "ranking_options"  # type: ignore[index]


REFUNDS = {"type": "eq", "key": "section", "value": "Refunds"}
HOLIDAYS = {"type": "eq", "key": "section", "value": "Holidays"}


class PreferringParcels:
    """A reranker that puts the passage about parcels first, whatever the question."""

    def score(self, question: str, passages: Sequence[str]) -> list[float]:
        return [1.0 if "Parcels" in passage else 0.0 for passage in passages]


def test_a_threshold_keeps_what_reaches_it_whatever_a_reranker_puts_first(
    with_store: tuple[OpenAI, TestClient],
) -> None:
    """The threshold applies before `max_num_results` cuts: a reranker that puts a passage
    below the threshold first leaves the place to the one that reaches it (before, the search
    stopped at `max_num_results` reranked passages, then left them all out)."""
    client, test_client = with_store
    guide = client.vector_stores.files.upload_and_poll(
        vector_store_id=STORE, file=("guide.md", GUIDE)
    )
    client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=("p.md", PARCELS))
    question = "How are invoices refunded?"
    best = client.vector_stores.search(STORE, query=question).data[0]
    assert best.file_id == guide.id
    components_of(test_client).retrievers.reranker = PreferringParcels()
    components_of(test_client).retrievers.forget(STORE)  # its retriever made anew, reranking
    reranked = client.vector_stores.search(STORE, query=question, max_num_results=1)
    assert [r.filename for r in reranked.data] == ["p.md"]
    reaching = client.vector_stores.search(
        STORE,
        query=question,
        max_num_results=1,
        ranking_options={"score_threshold": best.score},
    )
    assert [r.file_id for r in reaching.data] == [guide.id]


def test_a_document_ingested_by_the_cli_is_named_by_its_path(
    with_store: tuple[OpenAI, TestClient], tmp_path: Path
) -> None:
    client, test_client = with_store
    components = components_of(test_client)
    folder = tmp_path / "docs"
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "refunds.md").write_bytes(GUIDE)
    collection = components.store.collection(STORE, components.embedder.model_id)
    IngestService(IngestSettings(), collection, lambda: components.embedder).run([folder])
    components.retrievers.forget(STORE)
    best = client.vector_stores.search(STORE, query="How are invoices refunded?").data[0]
    assert best.filename == "docs/policies/refunds.md"
    assert str(tmp_path) not in best.model_dump_json()  # never a server path
    assert best.attributes is not None
    assert best.file_id == best.attributes["document_id"]


def test_a_store_the_key_does_not_see_answers_as_a_missing_one(
    with_store: tuple[OpenAI, TestClient],
) -> None:
    client, test_client = with_store
    client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=("guide.md", GUIDE))
    created = test_client.post(
        "/admin/keys",
        json={"collections": ["other-docs"]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    other = client.with_options(api_key=created.json()["key"])
    with pytest.raises(NotFoundError) as hidden:
        other.vector_stores.search(STORE, query="How are invoices refunded?")
    with pytest.raises(NotFoundError) as missing:
        client.vector_stores.search("no-such-store", query="How are invoices refunded?")
    assert str(hidden.value).replace(STORE, "X") == str(missing.value).replace("no-such-store", "X")
    assert "thirty" not in str(hidden.value)


@pytest.mark.parametrize(
    "filters",
    [
        {"type": "and", "filters": 5},
        {"type": "and", "filters": True},
        {"type": "and", "filters": 0},
        {"type": "and", "filters": False},
        {"type": "and", "filters": ""},
        {"type": "and", "filters": []},
        {"type": "and", "filters": None},
        {"type": "and", "filters": {"type": "eq", "key": "section", "value": "Holidays"}},
        {"type": "and"},
        0,
        False,
        "",
        [],
        "section",
    ],
)
def test_a_malformed_filter_is_refused_never_read_as_no_filter(
    with_store: tuple[OpenAI, TestClient], filters: object
) -> None:
    # Read as no filter, these would search the whole store where the client meant to narrow it.
    client, test_client = with_store
    client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=("guide.md", GUIDE))
    answer = test_client.post(
        f"/v1/vector_stores/{STORE}/search",
        json={"query": "office closed", "filters": filters},
        headers={"Authorization": f"Bearer {KEY}"},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["param"] == "filters"
    assert "metadata equality only" in error["message"]


def test_no_filters_given_or_null_search_the_whole_store(
    with_store: tuple[OpenAI, TestClient],
) -> None:
    client, test_client = with_store
    client.vector_stores.files.upload_and_poll(vector_store_id=STORE, file=("guide.md", GUIDE))
    for body in ({"query": "office closed"}, {"query": "office closed", "filters": None}):
        answer = test_client.post(
            f"/v1/vector_stores/{STORE}/search",
            json=body,
            headers={"Authorization": f"Bearer {KEY}"},
        )
        assert answer.status_code == 200
        assert answer.json()["data"]


def test_a_filters_boolean_is_read_as_json_writes_it() -> None:
    """Metadata is text (`--meta draft=true year=2024 version=2.0`): the JSON value true is
    "true" (read as Python's True, it matched nothing); a number is read as written."""
    assert metadata_filters({"type": "eq", "key": "draft", "value": True}) == {"draft": "true"}
    assert metadata_filters({"type": "eq", "key": "draft", "value": False}) == {"draft": "false"}
    assert metadata_filters({"type": "eq", "key": "year", "value": 2024}) == {"year": "2024"}
    assert metadata_filters({"type": "eq", "key": "v", "value": 2.0}) == {"v": "2.0"}
    with pytest.raises(ValueError, match="two values"):
        metadata_filters({"type": "and", "filters": [
            {"type": "eq", "key": "v", "value": True}, {"type": "eq", "key": "v", "value": "x"},
        ]})  # fmt: skip
