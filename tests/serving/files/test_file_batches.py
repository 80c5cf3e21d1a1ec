"""Vector store file batches (`/v1/vector_stores/{id}/file_batches`) with the official `openai`
client: several files attached at once, followed until done, listed, cancelled; another
tenant's batch answers as a missing one. A real embedded Chroma, the fake embedder, an engine
behind `httpx.MockTransport`."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient
from openai import BadRequestError, NotFoundError, OpenAI

from tests.support.documents import (
    ADMIN_KEY,
    GUIDE,
    PARCELS,
    STORE,
    components_of,
)  # fmt: skip


def texts(test_client: TestClient) -> list[str]:
    components = components_of(test_client)
    collection = components.store.collection(STORE, components.embedder.model_id)
    return [chunk.text or "" for chunk in collection.scan(with_text=True)]


def test_a_batch_is_uploaded_ingested_and_listed(with_store: tuple[OpenAI, TestClient]) -> None:
    client, test_client = with_store
    batch = client.vector_stores.file_batches.upload_and_poll(
        vector_store_id=STORE,
        files=[("guide.md", GUIDE), ("parcels.md", PARCELS), ("notes.txt", b"\x00bin\x00" * 9)],
    )
    assert batch.status == "completed"
    assert batch.id.startswith("vsfb_")
    counts = batch.file_counts
    assert (counts.total, counts.completed, counts.failed, counts.in_progress) == (3, 2, 1, 0)
    listed = list(client.vector_stores.file_batches.list_files(batch.id, vector_store_id=STORE))
    assert sorted(f.status for f in listed) == ["completed", "completed", "failed"]
    failed = client.vector_stores.file_batches.list_files(
        batch.id, vector_store_id=STORE, filter="failed"
    )
    assert [f.last_error.code for f in failed.data if f.last_error] == ["invalid_file"]
    found = " ".join(texts(test_client))
    assert "thirty days" in found
    assert "next working day" in found
    again = client.vector_stores.file_batches.retrieve(batch.id, vector_store_id=STORE)
    assert again.model_dump() == batch.model_dump()


def test_cancel_stops_the_files_still_in_progress(with_store: tuple[OpenAI, TestClient]) -> None:
    client, test_client = with_store
    finished = client.vector_stores.files.upload_and_poll(
        vector_store_id=STORE, file=("parcels.md", PARCELS)
    )
    queued = [
        client.files.create(file=(f"{n}.md", GUIDE), purpose="assistants").id for n in range(2)
    ]
    jobs = components_of(test_client).jobs
    result: dict[str, Any] = {}
    with jobs.lock(STORE):  # the jobs wait for it: their files stay in progress
        batch = client.vector_stores.file_batches.create(vector_store_id=STORE, file_ids=queued)
        assert batch.status == "in_progress"
        # Cancelling removes what a job may have written, under the same lock: it is asked
        # from another thread, and the lock let go once it has begun.
        worker = threading.Thread(
            target=lambda: result.update(
                batch=client.vector_stores.file_batches.cancel(batch.id, vector_store_id=STORE)
            )
        )
        worker.start()
        catalog = jobs.catalog
        while all(a.status == "in_progress" for a in catalog.attachments(vector_store=STORE)[1:]):
            worker.join(0.01)
    worker.join(30)
    cancelled = result["batch"]
    assert cancelled.status == "cancelled"
    assert (cancelled.file_counts.cancelled, cancelled.file_counts.total) == (2, 2)
    assert list(client.vector_stores.file_batches.list_files(batch.id, vector_store_id=STORE)) == []
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=STORE)] == [finished.id]
    assert "thirty days" not in " ".join(texts(test_client))  # nothing of the cancelled files
    assert "next working day" in " ".join(texts(test_client))  # the file outside the batch


def test_batches_are_checked_and_belong_to_their_tenant(
    with_store: tuple[OpenAI, TestClient],
) -> None:
    client, test_client = with_store
    mine = client.files.create(file=("guide.md", GUIDE), purpose="assistants")
    batch = client.vector_stores.file_batches.create_and_poll(
        vector_store_id=STORE, file_ids=[mine.id, mine.id]
    )
    assert batch.file_counts.total == 1  # a file named twice is attached once
    with pytest.raises(BadRequestError, match="file_ids or in files"):
        client.vector_stores.file_batches.create(vector_store_id=STORE)
    with pytest.raises(NotFoundError):
        client.vector_stores.file_batches.create(vector_store_id=STORE, file_ids=["file-nope"])
    with pytest.raises(NotFoundError):
        client.vector_stores.file_batches.retrieve("vsfb_nope", vector_store_id=STORE)
    # Another tenant, given the same collection: the batch and the file are not its.
    created = test_client.post(
        "/admin/keys",
        json={"collections": [STORE]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    other = client.with_options(api_key=created.json()["key"])
    with pytest.raises(NotFoundError) as hidden:
        other.vector_stores.file_batches.retrieve(batch.id, vector_store_id=STORE)
    assert batch.id in str(hidden.value)  # named as asked, nothing more
    with pytest.raises(NotFoundError):
        other.vector_stores.file_batches.cancel(batch.id, vector_store_id=STORE)
    with pytest.raises(NotFoundError):
        other.vector_stores.file_batches.create(vector_store_id=STORE, file_ids=[mine.id])
