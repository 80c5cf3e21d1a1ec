"""Vector stores at their edges: a long ingestion holds up no detach (of its own file or of
another), requests at the same moment never attach past a tenant's bound on ingestions in
progress, text no tokenizer takes is a 400, a store keeps its `metadata`, and what is missing
is named. The services over a real embedded Chroma and the fake embedder, and the app with the
`openai` client."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI, PermissionDeniedError

from ragtune.retrieval.embedder import Vector
from ragtune.retrieval.store import open_store
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.client import EngineClient
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import QuotaExceededError
from ragtune.serving.tenants.principal import Principal
from ragtune.serving.vector_stores.protocol import (
    CreateFileBatchRequest,
    CreateVectorStoreRequest,
)
from tests.support.documents import (
    ADMIN_KEY,
    BASE,
    GUIDE,
    KEY,
    PARCELS,
    STORE,
    engine,
    fake_parts,
    serving_settings,
)
from tests.support.fakes import FakeEmbedder, FakeTokenizer

ALICE = Principal(tenant="alice", collections=frozenset({STORE, "other-docs"}))
STALLING = b"""# Stalling

This manual stalls its embedder until the test lets it go on.
"""


class StallingEmbedder(FakeEmbedder):
    """The fake embedder, except that a text about stalling is embedded only once the test
    sets `release`: an ingestion as long as the test wants (`stalled` says it has begun)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()
        self.release = threading.Event()

    def _encode(self, texts: Sequence[str]) -> list[Vector]:
        if any("stalls" in text for text in texts):
            self.stalled.set()
            assert self.release.wait(60), "the test never released the embedder"
        return super()._encode(texts)


@pytest.fixture
def stalling(tmp_path: Path) -> Iterator[tuple[Components, StallingEmbedder]]:
    """The services with the stalling embedder, the store STORE created for ALICE."""
    settings = serving_settings(tmp_path / "data")
    embedder = StallingEmbedder()
    pool = EnginePool(
        [EngineClient("http://engine", connect_retries=0, transport=httpx.MockTransport(engine))],
        slots=2,
    )
    parts = assemble(
        settings, store=open_store(settings.retrieval, "write"), embedder=embedder,
        engines=pool, tokenizer=FakeTokenizer(), base_model=BASE,
    )  # fmt: skip
    parts.jobs.start()
    parts.vector_stores.create(ALICE, CreateVectorStoreRequest(name=STORE))
    try:
        yield parts, embedder
    finally:
        embedder.release.set()
        parts.close()


def chunks_of(parts: Components, store: str, file_id: str) -> int:
    job = parts.jobs.catalog.attachments(vector_store=store, file_id=file_id)
    collection = parts.store.collection(store, parts.embedder.model_id)
    doc_ids = {attached.doc_id for attached in job}
    return sum(1 for chunk in collection.scan() if chunk.metadata.get("doc_id") in doc_ids)


def stalled_ingestion(parts: Components, embedder: StallingEmbedder) -> str:
    """The id of a file attached to STORE whose ingestion has begun and is held in its
    embedder (until `embedder.release` is set)."""
    long = parts.files.create(ALICE, "stalling.md", "assistants", io.BytesIO(STALLING))
    parts.vector_stores.attach(ALICE, STORE, long.id)
    assert embedder.stalled.wait(30)
    return long.id


def test_detaching_another_file_does_not_wait_for_a_long_ingestion(
    stalling: tuple[Components, StallingEmbedder],
) -> None:
    parts, embedder = stalling
    stores = parts.vector_stores
    done = parts.files.create(ALICE, "guide.md", "assistants", io.BytesIO(GUIDE))
    stores.attach(ALICE, STORE, done.id)
    parts.jobs.wait(STORE, done.id, timeout=30)
    long_id = stalled_ingestion(parts, embedder)
    with ThreadPoolExecutor(1) as requests:
        # An HTTP request runs in a worker thread: it ends while the ingestion still embeds.
        requests.submit(stores.detach, ALICE, STORE, done.id).result(timeout=30)
    assert not embedder.release.is_set()
    assert parts.jobs.catalog.attachment(STORE, done.id) is None
    assert stores.file(ALICE, STORE, long_id).status == "in_progress"
    embedder.release.set()
    parts.jobs.wait(STORE, long_id, timeout=30)
    assert stores.file(ALICE, STORE, long_id).status == "completed"
    collection = parts.store.collection(STORE, parts.embedder.model_id)
    assert collection.count() == chunks_of(parts, STORE, long_id) > 0  # the guide's are gone


def test_detaching_the_file_being_ingested_stops_its_job_at_once(
    stalling: tuple[Components, StallingEmbedder],
) -> None:
    parts, embedder = stalling
    stores = parts.vector_stores
    long_id = stalled_ingestion(parts, embedder)
    with ThreadPoolExecutor(1) as requests:
        requests.submit(stores.detach, ALICE, STORE, long_id).result(timeout=30)
    assert not embedder.release.is_set()
    embedder.release.set()
    parts.jobs.wait(STORE, long_id, timeout=30)
    assert parts.jobs.catalog.attachment(STORE, long_id) is None
    assert parts.store.collection(STORE, parts.embedder.model_id).count() == 0


def test_a_file_attached_again_mid_ingestion_is_written_once_by_its_new_job(
    stalling: tuple[Components, StallingEmbedder],
) -> None:
    parts, embedder = stalling
    stores = parts.vector_stores
    long_id = stalled_ingestion(parts, embedder)
    stores.detach(ALICE, STORE, long_id)
    stores.attach(ALICE, STORE, long_id)  # the first job still embeds: it must not write
    embedder.release.set()
    parts.jobs.wait(STORE, long_id, timeout=30)
    assert stores.file(ALICE, STORE, long_id).status == "completed"
    collection = parts.store.collection(STORE, parts.embedder.model_id)
    counts = {chunk.metadata["n_chunks"] for chunk in collection.scan()}
    assert counts == {collection.count()}  # one whole version of the document


def test_the_jobs_kept_are_those_queued_or_running(
    stalling: tuple[Components, StallingEmbedder],
) -> None:
    """A server attaches files for as long as it runs: what it keeps per job goes when the
    job ends, however it ends (completed, stopped by a detach, superseded by a new attach)."""
    parts, embedder = stalling
    stores, jobs = parts.vector_stores, parts.jobs
    long_id = stalled_ingestion(parts, embedder)
    stores.detach(ALICE, STORE, long_id)
    stores.attach(ALICE, STORE, long_id)
    done = parts.files.create(ALICE, "guide.md", "assistants", io.BytesIO(GUIDE))
    stores.attach(ALICE, STORE, done.id)
    key = (STORE, long_id)
    assert key in jobs._futures  # the new job, queued or running
    assert key in jobs._latest
    embedder.release.set()
    for file_id in (long_id, done.id):
        jobs.wait(STORE, file_id, timeout=30)
        assert stores.file(ALICE, STORE, file_id).status == "completed"
    stores.detach(ALICE, STORE, done.id)  # a job that has ended: nothing left to cancel
    for _ in range(100):  # the last job's future is marked done just after its work ends
        if not jobs._futures:
            break
        time.sleep(0.01)
    assert (jobs._futures, jobs._latest, jobs._cancelled) == ({}, {}, set())


def attach_at_once(
    parts: Components, tenant: Principal, store: str, pairs: list[list[str]], attach_with: str
) -> list[bool]:
    """Each pair attached by its own request, the requests let go together: which were not
    refused (QuotaExceededError)."""
    meet = threading.Barrier(len(pairs))

    def attach(pair: list[str]) -> bool:
        meet.wait(timeout=30)
        try:
            if attach_with == "file_batches":
                batch = CreateFileBatchRequest(file_ids=pair)
                parts.vector_stores.create_batch(tenant, store, batch)
            else:
                created = CreateVectorStoreRequest(name=store, file_ids=pair)
                parts.vector_stores.create(tenant, created)
        except QuotaExceededError:
            return False
        return True

    with ThreadPoolExecutor(len(pairs)) as requests:
        return list(requests.map(attach, pairs))


@pytest.mark.parametrize("attach_with", ["file_batches", "vector_stores"])
def test_requests_at_once_never_attach_past_the_tenants_bound(
    tmp_path: Path, attach_with: str
) -> None:
    """Two requests of two files each, with room for two: one is attached whole, the other
    refused whole, attaching nothing (over several rounds)."""
    parts = fake_parts(serving_settings(tmp_path / "data", tenant_max_pending_ingests=2))
    parts.jobs.start()
    try:
        for round_ in range(6):
            store = f"round-{round_}"
            tenant = Principal(tenant="alice", collections=frozenset({store}))
            files = [
                parts.files.create(tenant, f"{n}.md", "assistants", io.BytesIO(GUIDE)).id
                for n in range(4)
            ]
            pairs = [files[:2], files[2:]]
            if attach_with == "file_batches":
                parts.vector_stores.create(tenant, CreateVectorStoreRequest(name=store))
            with parts.jobs.lock(store):  # the jobs wait for it: their files stay in progress
                answers = attach_at_once(parts, tenant, store, pairs, attach_with)
                pending = parts.jobs.catalog.attachments(tenant="alice", status="in_progress")
                assert len(pending) <= 2
                assert sorted(answers) == [False, True]
                for pair, attached in zip(pairs, answers, strict=True):
                    found = [parts.jobs.catalog.attachment(store, file_id) for file_id in pair]
                    assert all(found) if attached else not any(found)
            for file_id in files:
                parts.jobs.wait(store, file_id, timeout=30)
    finally:
        parts.close()


def test_an_unpaired_surrogate_in_a_search_query_is_a_400(
    with_store: tuple[OpenAI, TestClient],
) -> None:
    _, test_client = with_store
    answer = test_client.post(
        f"/v1/vector_stores/{STORE}/search",
        content=b'{"query": "\\ud800 refund"}',
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert "unpaired UTF-16 surrogate" in error["message"]
    assert error["param"] == "query"


def test_a_store_keeps_its_metadata(with_store: tuple[OpenAI, TestClient]) -> None:
    client, _ = with_store
    created = client.vector_stores.create(name="meta-docs", metadata={"team": "billing"})
    assert created.metadata == {"team": "billing"}
    assert client.vector_stores.retrieve("meta-docs").metadata == {"team": "billing"}
    listed = {store.id: store.metadata for store in client.vector_stores.list()}
    assert listed == {STORE: {}, "meta-docs": {"team": "billing"}}
    again = client.vector_stores.create(name="meta-docs")  # given none: kept
    assert again.metadata == {"team": "billing"}
    replaced = client.vector_stores.create(name="meta-docs", metadata={"owner": "ops"})
    assert replaced.metadata == {"owner": "ops"}
    with pytest.raises(BadRequestError, match="at most 16"):
        client.vector_stores.create(name="meta-docs", metadata={f"k{n}": "v" for n in range(17)})


def test_a_key_limited_to_its_collections_is_told_to_name_one(
    with_store: tuple[OpenAI, TestClient],
) -> None:
    client, test_client = with_store
    created = test_client.post(
        "/admin/keys",
        json={"collections": [STORE]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    limited = client.with_options(api_key=created.json()["key"])
    for unnamed in ({}, {"name": ""}):
        with pytest.raises(PermissionDeniedError) as refused:
            limited.vector_stores.create(**unnamed)  # type: ignore[arg-type]
        assert f"give `name`, one of them ({STORE})" in refused.value.message
    assert limited.vector_stores.create(name=STORE).id == STORE


def test_a_missing_file_or_batch_is_named_as_such(
    with_store: tuple[OpenAI, TestClient],
) -> None:
    client, _ = with_store
    uploaded = client.files.create(file=("parcels.md", PARCELS), purpose="assistants")
    with pytest.raises(NotFoundError) as missing:
        client.vector_stores.files.retrieve(uploaded.id, vector_store_id=STORE)
    assert missing.value.code == "file_not_found"
    with pytest.raises(NotFoundError) as detached:
        client.vector_stores.files.delete(uploaded.id, vector_store_id=STORE)
    assert detached.value.code == "file_not_found"
    with pytest.raises(NotFoundError) as no_store:
        client.vector_stores.retrieve("no-such-docs")
    assert no_store.value.code == "vector_store_not_found"
    with pytest.raises(NotFoundError) as no_batch:
        client.vector_stores.file_batches.retrieve("vsfb-nothing", vector_store_id=STORE)
    assert no_batch.value.code == "file_batch_not_found"
