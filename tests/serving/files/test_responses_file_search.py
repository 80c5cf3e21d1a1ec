"""`/v1/responses` with the `file_search` tool, as OpenAI's Responses API reports it: a
`file_search_call` item before the message (its results with `include`, as the vector store
search gives them), the answer's [n] markers as `file_citation` annotations naming the files,
and the same in the stream's events. The official `openai` client against the app, a real
embedded Chroma, the fake embedder, the fake engine answering with citation markers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import OpenAI
from openai.types.responses import Response, ResponseFileSearchToolCall, ResponseOutputMessage

from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.store import open_store
from ragtune.serving.app import create_app
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import ServingSettings
from tests.support.documents import (
    BASE,
    GUIDE,
    PARCELS,
    STORE,
    components_of,
    openai_client,
    serving_settings,
)  # fmt: skip
from tests.support.fake_engine import FakeEngine
from tests.support.fakes import FakeEmbedder, FakeTokenizer
from tests.support.openai_schema import assert_openai_shape

ANSWER = "Invoices are refunded within thirty days [1]. Parcels go by courier [2][1]."
QUESTION = "How are invoices refunded and when are parcels shipped by courier?"
RESULTS = "file_search_call.results"
FILE_SEARCH = {"type": "file_search", "vector_store_ids": [STORE]}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[tuple[OpenAI, TestClient]]:
    """The `openai` client and the app's TestClient, over an engine answering ANSWER (whole or
    streamed); the store STORE holds guide.md and parcels.md."""
    engine = FakeEngine(text=ANSWER)

    def parts(settings: ServingSettings, generation: bool = True) -> Components:
        return assemble(
            settings, store=open_store(settings.retrieval, "write"), embedder=FakeEmbedder(),
            engines=EnginePool([engine.client()], slots=2), tokenizer=FakeTokenizer(),
            base_model=BASE,
        )  # fmt: skip

    app = create_app(serving_settings(tmp_path / "data"), open_parts=parts)
    with TestClient(app) as test_client:
        openai = openai_client(test_client)
        openai.vector_stores.create(name=STORE)
        for name, content in (("guide.md", GUIDE), ("parcels.md", PARCELS)):
            done = openai.vector_stores.files.upload_and_poll(
                vector_store_id=STORE, file=(name, content)
            )
            assert done.status == "completed", done.last_error
        yield openai, test_client


def ask(client: OpenAI, **fields: Any) -> Response:
    return client.responses.create(
        model=BASE,
        input=QUESTION,
        tools=[FILE_SEARCH],  # type: ignore[list-item]
        **fields,
    )


def uploaded_files(client: OpenAI) -> list[tuple[str, str]]:
    """The files of STORE: (file_id, filename)."""
    return [
        (f.id, f.model_extra["ragtune"]["filename"])  # type: ignore[index]
        for f in client.vector_stores.files.list(STORE)
    ]


def sources(response: Response) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = response.model_extra["ragtune"]["sources"]  # type: ignore[index]
    return found


def expected_annotations(text: str, files: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """A file_citation at each [n] of `text`, naming files[n - 1] (file_id, filename)."""
    return [
        {
            "type": "file_citation",
            "index": marker.start(),
            "file_id": files[int(marker.group(1)) - 1][0],
            "filename": files[int(marker.group(1)) - 1][1],
        }
        for marker in re.finditer(r"\[(\d+)\]", text)
    ]


def without_ids(value: Any) -> Any:
    """`value` with the ids each response draws anew left out."""
    if isinstance(value, dict):
        return {k: without_ids(v) for k, v in value.items() if k not in ("id", "created_at")}
    if isinstance(value, list):
        return [without_ids(item) for item in value]
    return value


def test_the_search_comes_before_the_message_and_the_citations_name_the_files(
    client: tuple[OpenAI, TestClient],
) -> None:
    openai, _ = client
    uploaded = {filename: file_id for file_id, filename in uploaded_files(openai)}
    response = ask(openai)
    search, message = response.output
    assert isinstance(search, ResponseFileSearchToolCall)
    assert (search.status, search.queries, search.results) == ("completed", [QUESTION], None)
    assert search.id.startswith("fs_")
    assert isinstance(message, ResponseOutputMessage)
    assert response.output_text == ANSWER
    assert_openai_shape("response", response.model_dump(mode="json", exclude_unset=True))
    given = sources(response)
    assert len(given) >= 2  # [1] and [2] both name a passage
    files = [(uploaded[source["document"]], source["document"]) for source in given]
    annotations = [a.model_dump() for a in message.content[0].annotations]  # type: ignore[union-attr]
    assert annotations == expected_annotations(ANSWER, files)
    assert [ANSWER[a["index"] :][:3] for a in annotations] == ["[1]", "[2]", "[1]"]

    # With `include`, the passages given to the model, as the vector store search gives them.
    detailed = ask(openai, include=[RESULTS])
    found = detailed.output[0]
    assert isinstance(found, ResponseFileSearchToolCall)
    assert found.results is not None
    assert [r.attributes["chunk_id"] for r in found.results] == [  # type: ignore[index]
        s["chunk_id"] for s in sources(detailed)
    ]
    searched = openai.vector_stores.search(STORE, query=QUESTION, max_num_results=50).data
    by_chunk = {r.attributes["chunk_id"]: r for r in searched}  # type: ignore[index]
    for result in found.results:
        same = by_chunk[result.attributes["chunk_id"]]  # type: ignore[index]
        assert (result.file_id, result.filename, result.score, result.attributes) == (
            same.file_id, same.filename, same.score, same.attributes,
        )  # fmt: skip
        assert result.text == same.content[0].text
    assert_openai_shape("response", detailed.model_dump(mode="json", exclude_unset=True))
    # ragtune's own account of the passages is there as before.
    assert sources(detailed) == given


def test_the_stream_tells_the_search_then_the_annotated_message(
    client: tuple[OpenAI, TestClient],
) -> None:
    openai, _ = client
    events = list(ask(openai, include=[RESULTS], stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))
    kinds = [e.type for e in events]
    searched = [
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    assert kinds[:7] == ["response.created", "response.in_progress", *searched]
    search_events = events[2:7]
    assert {e.output_index for e in search_events} == {0}  # type: ignore[union-attr]
    added, done = search_events[0].item, search_events[-1].item  # type: ignore[union-attr]
    assert (added.type, added.status, done.status) == (
        "file_search_call",
        "in_progress",
        "completed",
    )
    assert {e.item_id for e in search_events[1:4]} == {done.id}  # type: ignore[union-attr]

    # The message follows at output_index 1, its annotations once its text is complete.
    message_events = events[7:-1]
    assert {e.output_index for e in message_events} == {1}  # type: ignore[union-attr]
    kinds = [e.type for e in message_events]
    last_delta = max(i for i, kind in enumerate(kinds) if kind == "response.output_text.delta")
    assert kinds[last_delta + 1 :] == [
        *["response.output_text.annotation.added"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    added_annotations = message_events[last_delta + 1 : last_delta + 4]
    for event in [*search_events[1:4], *added_annotations]:
        assert_openai_shape("response.stream_event", event.model_dump(exclude_unset=True))
    assert [e.annotation_index for e in added_annotations] == [0, 1, 2]  # type: ignore[union-attr]

    completed = events[-1]
    assert completed.type == "response.completed"
    final = completed.response
    message = final.output[1]
    assert isinstance(message, ResponseOutputMessage)
    annotations = [a.model_dump() for a in message.content[0].annotations]  # type: ignore[union-attr]
    assert [e.annotation.model_dump() for e in added_annotations] == annotations  # type: ignore[union-attr]
    whole = ask(openai, include=[RESULTS])
    assert without_ids(final.model_dump()["output"]) == without_ids(whole.model_dump()["output"])


def test_a_document_ingested_by_the_cli_is_cited_by_its_id_and_path(
    client: tuple[OpenAI, TestClient], tmp_path: Path
) -> None:
    openai, test_client = client
    for file_id, _ in uploaded_files(openai):  # only the ingested document is left to find
        openai.vector_stores.files.delete(file_id, vector_store_id=STORE)
    components = components_of(test_client)
    folder = tmp_path / "docs"
    (folder / "policies").mkdir(parents=True)
    (folder / "policies" / "refunds.md").write_bytes(GUIDE + b"\n" + PARCELS)
    collection = components.store.collection(STORE, components.embedder.model_id)
    IngestService(IngestSettings(), collection, lambda: components.embedder).run([folder])
    components.retrievers.forget(STORE)

    response = ask(openai, include=[RESULTS])
    search, message = response.output
    assert isinstance(search, ResponseFileSearchToolCall)
    assert search.results
    for result in search.results:
        assert result.filename == "docs/policies/refunds.md"
        assert result.file_id == result.attributes["document_id"]  # type: ignore[index]
    assert isinstance(message, ResponseOutputMessage)
    annotations = message.content[0].annotations  # type: ignore[union-attr]
    assert annotations
    assert {(a.file_id, a.filename) for a in annotations} == {  # type: ignore[union-attr]
        (search.results[0].file_id, "docs/policies/refunds.md")
    }
    assert str(tmp_path) not in response.model_dump_json()  # never a server path


def test_without_file_search_there_is_no_search_item_and_no_annotation(
    client: tuple[OpenAI, TestClient],
) -> None:
    openai, _ = client
    # The same passages through ragtune's extension: cited as [n], but no file_search call.
    for stream in (False, True):
        fields: dict[str, Any] = {
            "model": BASE,
            "input": QUESTION,
            "include": [RESULTS],
            "extra_body": {"ragtune": {"collections": [STORE]}},
        }
        if stream:
            events = list(openai.responses.create(stream=True, **fields))
            assert not any("file_search" in e.type or "annotation" in e.type for e in events)
            response = events[-1].response  # type: ignore[union-attr]
        else:
            response = openai.responses.create(**fields)
        assert sources(response)
        (message,) = response.output
        assert isinstance(message, ResponseOutputMessage)
        assert response.output_text == ANSWER
        assert message.content[0].annotations == []  # type: ignore[union-attr]
