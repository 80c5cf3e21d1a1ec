"""Ingestion into a real (embedded) Chroma: incremental, idempotent, sync, failures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ragtune.ingest.documents import absolute, remove_documents
from ragtune.ingest.errors import DocumentNotFoundError, InvalidMetadataError
from ragtune.ingest.pipeline import FileStatus, IngestService, IngestSummary, parse_meta
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.store import ChunkRecord, Collection
from tests.support.fakes import FakeEmbedder, InMemoryCollection
from tests.support.makers import encrypted_pdf_bytes, pdf_bytes, write_docx

LONG = " ".join(f"sentence {n} about topic {n % 7}." for n in range(60))
# Long enough to be a chunk of its own (a subsection of a few words joins its section's chunk).
DETAILS = "alpha details here. " + " ".join(f"detail{n}" for n in range(40))
CHANGED = DETAILS.replace("here", "CHANGED")


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / "a.md").write_text(f"# Alpha\n{LONG}\n## Details\n{DETAILS}\n")
    (root / "b.rst").write_text(f"Beta\n====\n\n{LONG}\n")
    (root / "sub" / "c.txt").write_text("gamma text file with a few words.\n")
    (root / "sub" / "d.html").write_text("<h1>Delta</h1><p>delta paragraph.</p>")
    write_docx(root / "sub" / "e.docx", "Epsilon", [(1, "Part", ["epsilon words."])])
    (root / "sub" / "f.pdf").write_bytes(pdf_bytes([["zeta page one"], ["zeta page two"]]))
    return root


def run(
    collection: Collection, embedder: FakeEmbedder, *paths: Path, **kwargs: object
) -> IngestSummary:
    service = IngestService(IngestSettings(), collection, lambda: embedder)
    return service.run(list(paths), **kwargs)  # type: ignore[arg-type]


def statuses(summary: IngestSummary) -> dict[str, str]:
    return {Path(f.source).name: f.status.value for f in summary.files}


def chunk_state(collection: Collection) -> dict[str, tuple[str | None, object]]:
    return {c.id: (c.text, c.metadata["source"]) for c in collection.scan(with_text=True)}


def test_first_run_stores_every_format_with_metadata(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    summary = run(collection, embedder, corpus, meta={"team": "docs"})
    assert statuses(summary) == dict.fromkeys(
        ["a.md", "b.rst", "c.txt", "d.html", "e.docx", "f.pdf"], "new"
    )
    assert summary.chunks_embedded == collection.count() == embedder.embedded
    chunks = list(collection.scan(with_text=True))
    sources = {Path(str(c.metadata["source"])).name for c in chunks}
    assert sources == {"a.md", "b.rst", "c.txt", "d.html", "e.docx", "f.pdf"}
    details = [c for c in chunks if c.metadata["section"] == "Details"]
    assert [(c.text, c.metadata["title"], c.metadata["team"]) for c in details] == [
        (DETAILS, "Alpha", "docs")
    ]
    assert {c.metadata["page"] for c in chunks if c.metadata["file_type"] == "pdf"} == {1, 2}
    for c in chunks:
        assert c.metadata["embedding_model"] == embedder.model_id
        assert c.metadata["n_chunks"] > c.metadata["chunk_index"] >= 0


def test_second_run_embeds_nothing(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    run(collection, embedder, corpus)
    before = chunk_state(collection)
    embedded = embedder.embedded
    summary = run(collection, embedder, corpus)
    assert set(statuses(summary).values()) == {"unchanged"}
    assert embedder.embedded == embedded
    assert chunk_state(collection) == before


def test_a_newer_loader_rereads_its_files_only(
    collection: Collection, embedder: FakeEmbedder, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files stored by an older loader of their type are read again (the store would otherwise
    keep the older reading for ever); files of other types stay unchanged."""
    from ragtune.ingest import loaders

    run(collection, embedder, corpus)
    monkeypatch.setitem(loaders.LOADER_VERSIONS, loaders.HTML, loaders.LOADER_VERSIONS["html"] + 1)
    summary = run(collection, embedder, corpus)
    changed = {name for name, status in statuses(summary).items() if status != "unchanged"}
    assert changed == {"d.html"}


def test_changed_file_replaces_only_what_changed(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    run(collection, embedder, corpus)
    before = chunk_state(collection)
    embedded = embedder.embedded
    (corpus / "a.md").write_text(f"# Alpha\n{LONG}\n## Details\n{CHANGED}\n")
    summary = run(collection, embedder, corpus)
    assert statuses(summary)["a.md"] == "changed"
    assert embedder.embedded - embedded == 1  # only the edited chunk
    after = chunk_state(collection)
    assert set(before) - set(after) == {i for i, (text, _) in before.items() if text == DETAILS}
    assert [t for t, _ in after.values() if t and "CHANGED" in t] == [CHANGED]
    a_chunks = [c for c in collection.scan() if str(c.metadata["source"]).endswith("a.md")]
    assert {c.metadata["n_chunks"] for c in a_chunks} == {len(a_chunks)}


def test_replacement_writes_new_chunks_before_deleting_old(
    embedder: FakeEmbedder, corpus: Path
) -> None:
    collection = InMemoryCollection("docs", embedder.model_id)
    run(collection, embedder, corpus / "b.rst")

    seen: list[int] = []
    original_delete = collection._delete

    def delete(ids: list[str]) -> None:
        seen.append(sum(1 for _ in collection.scan()))
        original_delete(ids)

    collection._delete = delete  # type: ignore[method-assign]
    (corpus / "b.rst").write_text("Beta\n====\n\nwholly new text.\n")
    run(collection, embedder, corpus / "b.rst")
    ops = [op for op, n in collection.operations if n]
    assert ops[-2:] == ["upsert", "delete"]
    assert seen
    assert seen[0] > 1
    assert [c.text for c in collection.scan(with_text=True)] == ["wholly new text."]


def test_sync_removes_documents_of_deleted_files_only(
    collection: Collection, embedder: FakeEmbedder, corpus: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("outside the synced folder.")
    run(collection, embedder, corpus, other)
    (corpus / "sub" / "c.txt").unlink()
    (other / "keep.txt").unlink()
    summary = run(collection, embedder, corpus)
    assert "c.txt" not in statuses(summary)  # without --sync nothing is removed
    summary = run(collection, embedder, corpus, sync=True)
    assert statuses(summary)["c.txt"] == "removed"
    sources = {Path(str(c.metadata["source"])).name for c in collection.scan()}
    assert "c.txt" not in sources
    assert "keep.txt" in sources  # not under the synced path


def test_sync_of_a_folder_that_is_gone_keeps_its_documents(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    """A named folder that is gone (a typo, a share not mounted) is a failure, not an order to
    remove everything under it; files deleted under a folder that is there are synced."""
    run(collection, embedder, corpus)
    before = chunk_state(collection)
    moved = corpus.with_name("moved")
    corpus.rename(moved)
    summary = run(collection, embedder, corpus, sync=True)
    assert chunk_state(collection) == before
    [failed] = summary.failed
    assert failed.source == str(corpus)
    assert failed.reason is not None
    assert "its 6 stored documents kept" in failed.reason
    assert f"ragtune docs rm {corpus}" in failed.reason
    assert summary.chunks_deleted == 0

    moved.rename(corpus)
    for path in sorted((corpus / "sub").iterdir()):
        path.unlink()
    (corpus / "sub").rmdir()
    summary = run(collection, embedder, corpus, sync=True)
    assert not summary.failed
    assert sorted(statuses(summary).values()) == ["removed"] * 4 + ["unchanged"] * 2


def test_a_path_through_dot_dot_is_the_same_document(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    run(collection, embedder, corpus)
    before = chunk_state(collection)
    summary = run(collection, embedder, corpus / "sub" / ".." / ".." / corpus.name / ".")
    assert set(statuses(summary).values()) == {"unchanged"}
    assert chunk_state(collection) == before


def test_a_dot_dot_after_a_symbolic_link_names_what_the_system_reads(tmp_path: Path) -> None:
    (tmp_path / "elsewhere" / "real").mkdir(parents=True)
    (tmp_path / "elsewhere" / "docs").mkdir()
    (tmp_path / "top" / "docs").mkdir(parents=True)
    (tmp_path / "top" / "link").symlink_to(tmp_path / "elsewhere" / "real")
    through = tmp_path / "top" / "link" / ".." / "docs"  # elsewhere/docs to the system
    assert through.resolve() == tmp_path / "elsewhere" / "docs"
    assert absolute(through) == through  # not top/docs
    assert absolute(tmp_path / "top" / "docs" / ".." / "docs") == tmp_path / "top" / "docs"


def test_documents_stored_under_a_dot_dot_path_are_found_by_their_plain_path(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    """Stored before paths were normalised (or by the HTTP API, which names its own paths):
    `docs rm` and `--sync` find them by the plain path."""
    service = IngestService(IngestSettings(), collection, lambda: embedder)
    service.run_file(corpus / "sub" / ".." / "a.md", "a.md")
    [stored] = {str(c.metadata["source"]) for c in collection.scan()}
    assert stored == str(corpus / "sub" / ".." / "a.md")
    assert [d.source for d in remove_documents(collection, [str(corpus / "a.md")])] == [stored]
    assert collection.count() == 0


def test_an_empty_name_removes_nothing(
    collection: Collection, embedder: FakeEmbedder, corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read as a path, "" is the current folder: every document under it would go."""
    run(collection, embedder, corpus)
    before = collection.count()
    monkeypatch.chdir(corpus)
    for names in ([""], [str(corpus / "a.md"), " "]):
        with pytest.raises(DocumentNotFoundError, match="empty"):
            remove_documents(collection, names)
        assert collection.count() == before


def test_a_file_whose_name_is_not_utf8_fails_alone(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    bad = os.fsdecode(bytes(corpus / "sub") + b"/bad\xffname.txt")
    Path(bad).write_text("a file copied from another system.\n")
    summary = run(collection, embedder, corpus)
    [failed] = summary.failed
    assert failed.source == str(corpus / "sub") + "/bad\\xffname.txt"
    assert failed.reason == "its name is not valid UTF-8; rename the file"
    assert failed.source.encode("utf-8")  # printable and storable as it is
    assert len([f for f in summary.files if f.status == FileStatus.NEW]) == 6


def test_bad_files_are_reported_and_the_rest_is_ingested(
    collection: Collection, embedder: FakeEmbedder, corpus: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "empty.txt").write_bytes(b"")
    (bad / "binary.txt").write_bytes(bytes(range(256)) * 8)
    (bad / "corrupt.pdf").write_bytes(pdf_bytes([["x y z"]])[:50])
    (bad / "locked.pdf").write_bytes(encrypted_pdf_bytes([["secret"]]))
    (bad / "huge.md").write_text("# Huge\n" + "word " * 20_000)
    (bad / "image.png").write_bytes(b"\x89PNG\r\n")
    named = tmp_path / "notes.xyz"
    named.write_text("explicitly named, unknown type")
    service = IngestService(IngestSettings(max_file_bytes=60_000), collection, lambda: embedder)
    summary = service.run([corpus, bad, named, tmp_path / "missing"])
    by_name = {Path(f.source).name: f for f in summary.files}
    reasons = {name: by_name[name].reason or "" for name in by_name}
    assert by_name["a.md"].status == FileStatus.NEW
    assert {n for n, f in by_name.items() if f.status == FileStatus.FAILED} == {
        "empty.txt",
        "binary.txt",
        "corrupt.pdf",
        "locked.pdf",
        "huge.md",
        "notes.xyz",
        "missing",
    }
    assert "empty file" in reasons["empty.txt"]
    assert "binary" in reasons["binary.txt"]
    assert "corrupt" in reasons["corrupt.pdf"]
    assert "encrypted" in reasons["locked.pdf"]
    assert "RAGTUNE_MAX_FILE_BYTES" in reasons["huge.md"]
    assert "unsupported file type" in reasons["notes.xyz"]
    assert "no such file" in reasons["missing"]
    assert by_name["image.png"].status == FileStatus.SKIPPED  # found in a folder, not named
    assert summary.read == 6  # neither failed nor skipped
    stored = {Path(str(c.metadata["source"])).name for c in collection.scan()}
    assert stored == {"a.md", "b.rst", "c.txt", "d.html", "e.docx", "f.pdf"}


def test_a_file_turned_corrupt_keeps_its_stored_version(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    run(collection, embedder, corpus)
    before = chunk_state(collection)
    (corpus / "sub" / "f.pdf").write_bytes(b"%PDF-1.4 truncated")
    summary = run(collection, embedder, corpus, sync=True)
    assert statuses(summary)["f.pdf"] == "failed"
    assert chunk_state(collection) == before


def test_dry_run_writes_nothing(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    summary = run(collection, embedder, corpus, dry_run=True)
    assert set(statuses(summary).values()) == {"new"}
    assert summary.chunks_embedded > 0
    assert collection.count() == 0
    assert embedder.embedded == 0


def test_changed_meta_rewrites_metadata_without_embedding(
    collection: Collection, embedder: FakeEmbedder, corpus: Path
) -> None:
    run(collection, embedder, corpus, meta={"team": "a"})
    embedded = embedder.embedded
    summary = run(collection, embedder, corpus, meta={"team": "b"})
    assert set(statuses(summary).values()) == {"changed"}
    assert embedder.embedded == embedded
    assert {c.metadata["team"] for c in collection.scan()} == {"b"}


def test_meta_pairs_are_validated() -> None:
    assert parse_meta(["team=support", "lang=en=GB"]) == {"team": "support", "lang": "en=GB"}
    with pytest.raises(InvalidMetadataError, match="key=value"):
        parse_meta(["team"])
    with pytest.raises(InvalidMetadataError, match="reserved"):
        parse_meta(["source=x"])
    for key in ("$or", "#document", "chroma:document"):  # the vector store's own keys
        with pytest.raises(InvalidMetadataError, match="the vector store keeps for its own keys"):
            parse_meta([f"{key}=1"])
    assert parse_meta(["a$b=1", "a#b=2", "x:chroma=3"]) == {"a$b": "1", "a#b": "2", "x:chroma": "3"}


def test_an_interrupted_write_is_completed_by_the_next_run(
    embedder: FakeEmbedder, corpus: Path
) -> None:
    collection = InMemoryCollection("docs", embedder.model_id)
    run(collection, embedder, corpus)
    clean = chunk_state(collection)
    (corpus / "b.rst").write_text(f"Beta\n====\n\n{LONG} and more.\n")

    class Killed(Exception):
        pass

    def die(ids: list[str]) -> None:
        raise Killed  # the process dies after the new chunks were stored, before cleanup

    real_delete = collection._delete
    collection._delete = die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        run(collection, embedder, corpus)
    collection._delete = real_delete  # type: ignore[method-assign]
    summary = run(collection, embedder, corpus)
    assert statuses(summary)["b.rst"] == "changed"
    assert summary.chunks_embedded == 0  # the new chunks were already stored
    reference = InMemoryCollection("ref", embedder.model_id)
    run(reference, embedder, corpus)
    assert chunk_state(collection) == chunk_state(reference) != clean


def test_records_are_never_written_without_an_embedding(
    embedder: FakeEmbedder, corpus: Path
) -> None:
    collection = InMemoryCollection("docs", embedder.model_id)
    added: list[ChunkRecord] = []
    original = collection._upsert
    collection._upsert = lambda records: (added.extend(records), original(records))  # type: ignore[method-assign,func-returns-value]
    run(collection, embedder, corpus)
    assert added
    assert all(len(r.embedding) == embedder.dimension for r in added)
