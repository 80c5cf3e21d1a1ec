"""Documents over HTTP with the official `openai` client against the app (its lifespan run by
FastAPI's TestClient): upload, attach (ingested in the background, as `ragtune ingest` would),
search, list, read back, delete; failures with the CLI's reasons (and no server path),
restarts mid-job, limits, quotas and file names as data. A real embedded Chroma, the fake
embedder, an engine behind `httpx.MockTransport`."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from openai import (
    APIStatusError,
    BadRequestError,
    InternalServerError,
    NotFoundError,
    OpenAI,
    PermissionDeniedError,
)

from ragtune.ingest.pipeline import IngestService, document_id
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.store import ChunkRecord, open_store
from ragtune.serving.app import create_app
from ragtune.serving.console.service import ingestion_jobs
from ragtune.serving.files.catalog import Attachment, FileCatalog, FileRecord
from ragtune.serving.vector_stores import jobs as jobs_module
from ragtune.serving.vector_stores.jobs import public_reason
from tests.support.documents import (
    ADMIN_KEY,
    BASE,
    GUIDE,
    KEY,
    STORE,
    components_of,
    fake_parts,
    openai_client,
    serving_settings,
)  # fmt: skip
from tests.support.fakes import FakeEmbedder


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., FastAPI]:
    def make(**files: Any) -> FastAPI:
        return create_app(serving_settings(tmp_path / "data", **files), open_parts=fake_parts)

    return make


@pytest.fixture
def served(make_app: Callable[..., FastAPI]) -> Iterator[tuple[OpenAI, TestClient]]:
    with TestClient(make_app()) as test_client:
        yield openai_client(test_client), test_client


def search(test_client: TestClient, question: str) -> list[str]:
    components = components_of(test_client)
    vector = components.embedder.embed_query(question)
    hits = components.retrievers.search(question, vector, k=5, collection=STORE)
    return [hit.text for hit in hits]


def test_upload_attach_search_list_and_delete_with_the_openai_client(
    served: tuple[OpenAI, TestClient], tmp_path: Path
) -> None:
    client, test_client = served
    store = client.vector_stores.create(name=STORE)
    assert (store.id, store.name, store.status) == (STORE, STORE, "completed")

    attached = client.vector_stores.files.upload_and_poll(
        vector_store_id=STORE, file=("guide.md", GUIDE)
    )
    assert attached.status == "completed", attached.last_error
    assert attached.last_error is None
    progress = attached.model_extra["ragtune"]  # type: ignore[index]
    assert progress["chunks_done"] == progress["chunks_total"] > 0
    assert progress["filename"] == "guide.md"

    # Searchable, dense and lexical, and the same chunks `ragtune ingest` makes of the file.
    assert any("thirty days" in text for text in search(test_client, "refunded invoices"))
    components = components_of(test_client)
    collection = components.store.collection(STORE, components.embedder.model_id)
    lexical = components.retrievers.lexical.current(collection, save=False)
    assert lexical.search("refunded invoices", 5)
    reference = tmp_path / "cli" / "guide.md"
    reference.parent.mkdir()
    reference.write_bytes(GUIDE)
    cli = components.store.collection("cli-copy", components.embedder.model_id, create=True)
    IngestService(IngestSettings(), cli, lambda: components.embedder).run([reference])
    texts = sorted(c.text or "" for c in collection.scan(with_text=True))
    assert texts == sorted(c.text or "" for c in cli.scan(with_text=True))

    # file_search in a chat request: the RAG route over the store.
    answer = client.chat.completions.create(
        model=BASE,
        messages=[{"role": "user", "content": "How are invoices refunded?"}],
        tools=[{"type": "file_search", "vector_store_ids": [STORE]}],  # type: ignore[list-item]
    )
    info = answer.model_extra["ragtune"]  # type: ignore[index]
    assert info["route"] == "rag"
    assert [s["document"] for s in info["sources"]] == ["guide.md"]
    with pytest.raises(BadRequestError, match="give 1 to 8 ids"):
        client.chat.completions.create(
            model=BASE,
            messages=[{"role": "user", "content": "How are invoices refunded?"}],
            tools=[{"type": "file_search", "vector_store_ids": [f"s{n}" for n in range(9)]}],  # type: ignore[list-item]
        )

    # Lists.
    assert [f.id for f in client.files.list()] == [attached.id]
    assert [f.id for f in client.vector_stores.files.list(vector_store_id=STORE)] == [attached.id]
    assert STORE in {s.id for s in client.vector_stores.list()}
    assert client.vector_stores.retrieve(STORE).file_counts.completed == 1

    # Delete: every chunk leaves the store and the lexical index.
    deleted = client.vector_stores.files.delete(attached.id, vector_store_id=STORE)
    assert deleted.deleted
    assert collection.count() == 0
    assert len(components.retrievers.lexical.current(collection, save=False)) == 0
    saved = LexicalIndexes.for_store(components.settings.retrieval.data_dir, components.store)
    assert len(saved.current(collection, save=False)) == 0
    assert search(test_client, "refunded invoices") == []
    with pytest.raises(NotFoundError):
        client.vector_stores.files.retrieve(attached.id, vector_store_id=STORE)
    assert client.files.delete(attached.id).deleted
    assert list(client.files.list()) == []
    # Deleting the store deletes its collection for every key: an operator's action.
    with pytest.raises(PermissionDeniedError, match="needs an admin key"):
        client.vector_stores.delete(STORE)
    client.vector_stores.retrieve(STORE)
    assert client.with_options(api_key=ADMIN_KEY).vector_stores.delete(STORE).deleted
    with pytest.raises(NotFoundError):
        client.vector_stores.retrieve(STORE)


def test_a_file_that_cannot_be_read_fails_with_the_clis_reason(
    served: tuple[OpenAI, TestClient],
) -> None:
    client, _ = served
    client.vector_stores.create(name=STORE)
    garbled = client.vector_stores.files.upload_and_poll(
        vector_store_id=STORE, file=("notes.txt", b"\x00\x01binary\x00" * 10)
    )
    assert garbled.status == "failed"
    assert garbled.last_error is not None
    assert garbled.last_error.code == "invalid_file"
    assert "binary content in a text file" in garbled.last_error.message
    empty = client.vector_stores.files.upload_and_poll(
        vector_store_id=STORE, file=("empty.md", b"  \n")
    )
    assert empty.last_error is not None
    assert "empty file" in empty.last_error.message
    assert client.vector_stores.retrieve(STORE).file_counts.failed == 2

    with pytest.raises(BadRequestError) as caught:
        client.files.create(file=("tool.exe", b"MZ"), purpose="assistants")
    assert "unsupported file type '.exe'" in str(caught.value)
    assert ".md" in str(caught.value)


def test_a_failure_names_the_file_never_a_server_path(
    served: tuple[OpenAI, TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's reason for a file it cannot read names its path; a tenant is told the same
    reason, about the name it uploaded, in `last_error` and in the console's job view."""
    client, test_client = served
    client.vector_stores.create(name=STORE)
    stored = tmp_path / "data" / "files"
    read_bytes = Path.read_bytes

    def denied(path: Path) -> bytes:
        if stored in path.parents:
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    failed = client.vector_stores.files.upload_and_poll(
        vector_store_id=STORE, file=("team/guide.md", GUIDE)
    )
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert failed.last_error.message == "cannot read: [Errno 13] Permission denied: 'team/guide.md'"
    listed = test_client.get(
        f"/v1/vector_stores/{STORE}/files", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert str(tmp_path) not in listed.text
    (job,) = ingestion_jobs(components_of(test_client))
    assert job.error == failed.last_error.message


@pytest.mark.parametrize(
    ("reason", "shown"),
    [
        ("empty file: there is no text to index", "empty file: there is no text to index"),
        ("cannot read: denied: '/data/files/file-1/a.md'", "cannot read: denied: '/etc/x.md'"),
        ("no room in /data/files and /data", "no room in <server path> and <server path>"),
        ("bad zip (/usr/lib/python3/zipfile.py:12)", "bad zip (<server path>:12)"),
        ("not application/pdf, 1/2 read", "not application/pdf, 1/2 read"),
    ],
)
def test_a_failure_reason_keeps_no_server_path(reason: str, shown: str) -> None:
    """The file is named as it was uploaded (even a name that looks like a path); every other
    absolute path, the data directory's first, is hidden."""
    data = Path("/data")
    assert (
        public_reason(reason, data / "files/file-1/a.md", "/etc/x.md", [data / "files", data])
        == shown
    )


def test_a_files_content_is_its_bytes_for_its_tenant_only(
    served: tuple[OpenAI, TestClient],
) -> None:
    client, test_client = served
    page = b"<html><script>alert(1)</script><p>Refunds take thirty days.</p></html>\n"
    created = client.files.create(file=("<b>refunds</b>.html", page), purpose="assistants")

    assert client.files.content(created.id).content == page
    raw = test_client.get(
        f"/v1/files/{created.id}/content", headers={"Authorization": f"Bearer {KEY}"}
    )
    # Bytes to download, never a page a browser would render on the server's origin.
    assert raw.headers["content-type"] == "application/octet-stream"
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["content-disposition"].startswith("attachment; filename*=utf-8''")

    other = test_client.post(
        "/admin/keys", json={"collections": ["other-docs"]},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()["key"]  # fmt: skip
    missing = "file-" + "0" * 24
    with pytest.raises(NotFoundError) as foreign:
        client.with_options(api_key=other).files.content(created.id)
    with pytest.raises(NotFoundError) as absent:
        client.with_options(api_key=other).files.content(missing)
    assert foreign.value.body == json.loads(
        json.dumps(absent.value.body).replace(missing, created.id)
    )
    assert client.with_options(api_key=ADMIN_KEY).files.content(created.id).content == page
    client.files.delete(created.id)
    with pytest.raises(NotFoundError):
        client.files.content(created.id)


def test_a_tenant_may_have_only_so_many_ingestions_in_progress(
    make_app: Callable[..., FastAPI],
) -> None:
    with TestClient(make_app(tenant_max_pending_ingests=2)) as test_client:
        client = openai_client(test_client)
        client.vector_stores.create(name=STORE)
        ids = [
            client.files.create(file=(f"{n}.md", GUIDE), purpose="assistants").id for n in range(4)
        ]
        jobs = components_of(test_client).jobs
        with jobs.lock(STORE):  # the jobs wait for it: their files stay in progress
            for file_id in ids[:2]:
                client.vector_stores.files.create(vector_store_id=STORE, file_id=file_id)
            # One already queued is answered as it is, and counted once.
            client.vector_stores.files.create(vector_store_id=STORE, file_id=ids[0])
            with pytest.raises(PermissionDeniedError) as refused:
                client.vector_stores.files.create(vector_store_id=STORE, file_id=ids[2])
            assert refused.value.code == "quota_exceeded"
            assert "RAGTUNE_TENANT_MAX_PENDING_INGESTS" in refused.value.message
            assert "wait until some are completed or failed" in refused.value.message
            with pytest.raises(PermissionDeniedError, match="MAX_PENDING_INGESTS"):
                client.vector_stores.create(name="more-docs", file_ids=[ids[3]])
            with pytest.raises(NotFoundError):
                client.vector_stores.retrieve("more-docs")  # refused before it was made
            # An operator is not bounded.
            admin = client.with_options(api_key=ADMIN_KEY)
            admin.vector_stores.files.create(vector_store_id=STORE, file_id=ids[2])
        for file_id in ids[:3]:
            jobs.wait(STORE, file_id, timeout=30)
        done = client.vector_stores.files.create_and_poll(vector_store_id=STORE, file_id=ids[3])
        assert done.status == "completed"


def test_a_file_name_is_data_never_a_path(
    served: tuple[OpenAI, TestClient], tmp_path: Path
) -> None:
    client, test_client = served
    name = "<script>alert(1)</script>../../evil.md"
    created = client.files.create(file=(name, GUIDE), purpose="assistants")
    assert created.filename == name  # kept as given, as data
    odd = client.files.create(file=("<script>x</script>.md", GUIDE), purpose="assistants")
    assert odd.filename == "<script>x</script>.md"
    listed = test_client.get("/v1/files", headers={"Authorization": f"Bearer {KEY}"})
    assert listed.headers["content-type"] == "application/json"
    assert "<script>x</script>.md" in {f["filename"] for f in listed.json()["data"]}
    stored = list((tmp_path / "data" / "files").rglob("*.md"))
    assert len(stored) == 2
    assert all(p.parent.parent == tmp_path / "data" / "files" for p in stored)
    assert all("<" not in p.name and ">" not in p.name for p in stored)


def test_upload_size_and_tenant_quotas(make_app: Callable[..., FastAPI]) -> None:
    app = make_app(max_upload_bytes=1000, tenant_max_files=2, tenant_max_bytes=1500)
    with TestClient(app) as test_client:
        client = openai_client(test_client)
        with pytest.raises(APIStatusError) as caught:
            client.files.create(file=("big.md", b"a " * 600), purpose="assistants")
        assert caught.value.status_code == 413
        assert "RAGTUNE_MAX_UPLOAD_BYTES" in caught.value.message
        with pytest.raises(APIStatusError) as caught:
            client.files.create(file=("huge.md", b"a " * 100_000), purpose="assistants")
        assert caught.value.status_code == 413
        client.files.create(file=("one.md", b"a " * 400), purpose="assistants")
        with pytest.raises(PermissionDeniedError, match="RAGTUNE_TENANT_MAX_BYTES"):
            client.files.create(file=("two.md", b"a " * 400), purpose="assistants")
        client.files.create(file=("two.md", b"a " * 10), purpose="assistants")
        with pytest.raises(PermissionDeniedError, match="RAGTUNE_TENANT_MAX_FILES"):
            client.files.create(file=("three.md", b"a"), purpose="assistants")
        assert len(list(client.files.list())) == 2
        # Other routes keep the request limit.
        too_long = test_client.post(
            "/v1/vector_stores", content=b"x" * 1_100_000,
            headers={"Authorization": f"Bearer {KEY}", "content-type": "application/json"},
        )  # fmt: skip
        assert too_long.status_code == 413


def test_a_restart_mid_job_resumes_it_and_leaves_no_partial_chunks(
    make_app: Callable[..., FastAPI], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    settings = serving_settings(data_dir)
    catalog = FileCatalog(data_dir / "files")
    jobs = {}
    for file_id, keep_bytes in (("file-" + "a" * 24, True), ("file-" + "b" * 24, False)):
        record = FileRecord(file_id, "shared", "guide.md", "guide.md", len(GUIDE), "assistants", 1)
        path = catalog.path(record)
        path.parent.mkdir(parents=True)
        if keep_bytes:
            path.write_bytes(GUIDE)
        catalog.add_file(record)
        doc_id = document_id(str(path))
        jobs[file_id] = doc_id
        catalog.attach(Attachment(STORE, file_id, "shared", "in_progress", 1, doc_id))
    catalog.close()
    # A write the stopped server did not finish: one chunk of a document that counts three.
    embedder = FakeEmbedder()
    with open_store(settings.retrieval, "write") as store:
        collection = store.collection(STORE, embedder.model_id, create=True)
        for file_id, doc_id in jobs.items():
            meta = {"doc_id": doc_id, "n_chunks": 3, "doc_hash": "old", "source": "x"}
            collection.add([ChunkRecord(f"partial-{file_id}", "half a document", meta,
                                        embedder.embed(["half a document"])[0])])  # fmt: skip

    with TestClient(make_app()) as test_client:
        client = openai_client(test_client)
        resumed = client.vector_stores.files.poll("file-" + "a" * 24, vector_store_id=STORE)
        gone = client.vector_stores.files.poll("file-" + "b" * 24, vector_store_id=STORE)
        assert resumed.status == "completed"
        assert gone.status == "failed"
        assert gone.last_error is not None
        assert "upload it again" in gone.last_error.message
        components = components_of(test_client)
        collection = components.store.collection(STORE, components.embedder.model_id)
        ids = {chunk.id for chunk in collection.scan()}
        assert not any(i.startswith("partial-") for i in ids)
        assert {str(c.metadata["doc_id"]) for c in collection.scan()} == {jobs["file-" + "a" * 24]}
        assert [j.status for j in components.jobs.list_jobs()] == ["completed", "failed"]
        assert json.dumps([j.__dict__ for j in components.jobs.list_jobs()])


def test_uploads_need_a_key(served: tuple[OpenAI, TestClient]) -> None:
    _, test_client = served
    refused = test_client.post("/v1/files", files={"file": ("a.md", io.BytesIO(b"x"))})
    assert refused.status_code == 401


def test_a_removal_the_server_did_not_finish_says_so_and_is_finished_at_start(
    make_app: Callable[..., FastAPI], monkeypatch: pytest.MonkeyPatch
) -> None:
    with TestClient(make_app()) as test_client:
        client = openai_client(test_client)
        client.vector_stores.create(name=STORE)
        done = client.vector_stores.files.upload_and_poll(
            vector_store_id=STORE, file=("guide.md", GUIDE)
        )
        assert done.status == "completed"

        # The server stops while the chunks are being removed.
        def stopped(collection: Any, doc_id: str) -> int:
            raise RuntimeError("the server stopped here")

        monkeypatch.setattr(jobs_module, "remove_document", stopped)
        with pytest.raises(InternalServerError):
            client.vector_stores.files.delete(done.id, vector_store_id=STORE)
        monkeypatch.undo()
        left = client.vector_stores.files.retrieve(done.id, vector_store_id=STORE)
        assert left.status == "cancelled"  # not "completed": what is left is not the document
        assert search(test_client, "refunded invoices")

    with TestClient(make_app()) as test_client:
        client = openai_client(test_client)
        with pytest.raises(NotFoundError):
            client.vector_stores.files.retrieve(done.id, vector_store_id=STORE)
        assert search(test_client, "refunded invoices") == []
        components = components_of(test_client)
        collection = components.store.collection(STORE, components.embedder.model_id)
        assert len(components.retrievers.lexical.current(collection, save=False)) == 0


def test_store_lists_are_pages_the_openai_client_follows(
    served: tuple[OpenAI, TestClient],
) -> None:
    client, test_client = served
    names = [f"store-{n}" for n in range(23)]
    for name in names:
        client.vector_stores.create(name=name)
    first = client.vector_stores.list()
    assert len(first.data) == 20  # OpenAI's default page
    assert first.has_more
    listed = [s.id for s in client.vector_stores.list(limit=7)]  # every page followed
    assert set(names) <= set(listed)
    assert len(listed) == len(set(listed))
    refused = test_client.get(
        "/v1/vector_stores?limit=101", headers={"Authorization": f"Bearer {KEY}"}
    )
    assert refused.status_code in (400, 422), refused.text
