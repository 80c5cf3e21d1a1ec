"""Files and vector stores are scoped: another tenant's file, and a store whose collection a
principal does not see, answer exactly as missing ones (the services, with restricted
principals built directly)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ragtune.serving.components import Components
from ragtune.serving.errors import (
    ForbiddenError,
    UploadedFileNotFoundError,
    VectorStoreNotFoundError,
)
from ragtune.serving.tenants.principal import OPERATOR, Principal
from ragtune.serving.vector_stores.protocol import CreateVectorStoreRequest
from tests.support.documents import GUIDE, fake_parts, serving_settings

ALICE = Principal(tenant="alice", collections=frozenset({"alice-docs"}))
BOB = Principal(tenant="bob", collections=frozenset({"bob-docs"}))


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Components]:
    components = fake_parts(serving_settings(tmp_path / "data"))
    components.jobs.start()
    yield components
    components.close()


def test_another_tenants_file_answers_as_a_missing_one(parts: Components) -> None:
    created = parts.files.create(ALICE, "guide.md", "assistants", io.BytesIO(GUIDE))
    assert parts.files.get(ALICE, created.id).filename == "guide.md"
    with pytest.raises(UploadedFileNotFoundError) as foreign:
        parts.files.get(BOB, created.id)
    with pytest.raises(UploadedFileNotFoundError) as missing:
        parts.files.get(BOB, "file-" + "0" * 24)
    assert str(foreign.value).replace(created.id, "ID") == str(missing.value).replace(
        "file-" + "0" * 24, "ID"
    )
    assert parts.files.list(BOB).data == []
    with pytest.raises(UploadedFileNotFoundError):
        parts.files.delete(BOB, created.id)
    parts.vector_stores.create(BOB, CreateVectorStoreRequest(name="bob-docs"))
    with pytest.raises(UploadedFileNotFoundError):
        parts.vector_stores.attach(BOB, "bob-docs", created.id)


def test_a_store_the_principal_does_not_see_answers_as_a_missing_one(parts: Components) -> None:
    parts.vector_stores.create(ALICE, CreateVectorStoreRequest(name="alice-docs"))
    with pytest.raises(VectorStoreNotFoundError) as hidden:
        parts.vector_stores.get(BOB, "alice-docs")
    with pytest.raises(VectorStoreNotFoundError) as missing:
        parts.vector_stores.get(BOB, "no-such-docs")
    assert str(hidden.value).replace("alice-docs", "X") == str(missing.value).replace(
        "no-such-docs", "X"
    )
    assert [s.id for s in parts.vector_stores.list(BOB).data] == []
    assert [s.id for s in parts.vector_stores.list(ALICE).data] == ["alice-docs"]
    with pytest.raises(VectorStoreNotFoundError):
        parts.vector_stores.delete(BOB, "alice-docs")
    with pytest.raises(ForbiddenError):
        parts.vector_stores.create(BOB, CreateVectorStoreRequest(name="alice-docs"))
    created = parts.files.create(BOB, "guide.md", "assistants", io.BytesIO(GUIDE))
    with pytest.raises(VectorStoreNotFoundError):
        parts.vector_stores.attach(BOB, "alice-docs", created.id)


def test_an_admin_key_reaches_every_tenants_files(parts: Components) -> None:
    """What a revoked key left behind can be removed by an operator, by id."""
    parts.vector_stores.create(ALICE, CreateVectorStoreRequest(name="alice-docs"))
    created = parts.files.create(ALICE, "guide.md", "assistants", io.BytesIO(GUIDE))
    parts.vector_stores.attach(ALICE, "alice-docs", created.id)
    parts.jobs.wait("alice-docs", created.id, timeout=30)
    assert parts.vector_stores.file(OPERATOR, "alice-docs", created.id).status == "completed"
    parts.vector_stores.detach(OPERATOR, "alice-docs", created.id)
    assert parts.files.delete(OPERATOR, created.id).deleted
    with pytest.raises(UploadedFileNotFoundError):
        parts.files.get(ALICE, created.id)


def test_a_job_whose_attachment_went_while_it_waited_writes_nothing(parts: Components) -> None:
    """A detach holds the collection's lock while it removes a document and its record; a job
    of that record (or of one attached again meanwhile and removed with it) that was waiting
    for the lock must not write the document back with no record left to remove it by."""
    parts.vector_stores.create(ALICE, CreateVectorStoreRequest(name="alice-docs"))
    created = parts.files.create(ALICE, "guide.md", "assistants", io.BytesIO(GUIDE))
    collection = parts.store.collection("alice-docs", parts.embedder.model_id)
    with parts.jobs.lock("alice-docs"):  # as a detach in progress holds it
        parts.vector_stores.attach(ALICE, "alice-docs", created.id)
        job = parts.jobs.catalog.attachment("alice-docs", created.id)
        assert job is not None
        for _ in range(200):  # the worker has read its record and waits for the lock
            if parts.jobs._futures[("alice-docs", created.id)].running():
                break
            time.sleep(0.01)
        time.sleep(0.2)
        parts.jobs.catalog.detach("alice-docs", created.id)  # what the detach does under the lock
    parts.jobs.wait("alice-docs", created.id, timeout=30)
    assert collection.count() == 0
