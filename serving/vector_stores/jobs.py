"""Ingestion of files attached to vector stores, in the background: a small pool of worker
threads owned by the server's components runs `IngestService.run_file` (the loaders, chunking
and bookkeeping of `ragtune ingest`) and keeps each job's status and progress in the catalog.

A document becomes searchable whole or not at all: its chunks are written only once all are
embedded (one write per file), a cancelled job stops before that write, and at start a job
left `in_progress` by a stopped server first loses any chunks of a write it did not finish,
then runs again (or fails, saying why, when its file is gone). A detached file is `cancelled`
until all its chunks are gone; a removal a stopped server did not finish is finished at start.
A job holds its store's lock only while it writes, never while it embeds: a detach, or another
tenant's request waiting on one, is never held up by a long ingestion."""

from __future__ import annotations

import itertools
import logging
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ragtune.ingest.counters import record_run
from ragtune.ingest.loaders import file_type_of
from ragtune.ingest.pipeline import FileStatus, IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.embedder import Embedder, Vector, collection_embedder
from ragtune.retrieval.errors import CollectionNotFoundError
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import Collection, VectorStore
from ragtune.serving.files.catalog import Attachment, AttachmentStatus, ErrorCode, FileCatalog

logger = logging.getLogger("ragtune.files")
PROGRESS_SLICE = 128
"""Chunks embedded between two progress reports (and two looks at a cancellation)."""


class JobStopped(Exception):
    """A running job was cancelled, or the server is stopping (the job then runs again at the
    next start)."""


@dataclass(frozen=True)
class JobInfo:
    """One ingestion job as an operator sees it (the console lists these)."""

    vector_store: str
    file_id: str
    tenant: str
    filename: str
    status: AttachmentStatus
    chunks_done: int
    chunks_total: int
    created_at: int
    error: str | None


class _ProgressEmbedder(Embedder):
    """The collection's embedder, embedding in slices: after each, `report(done, total)` is
    called (it raises JobStopped to stop the job). Vectors are the embedder's own."""

    def __init__(self, inner: Embedder, report: Callable[[int, int], None]) -> None:
        self.inner = inner
        self.report = report
        self.model_id = inner.model_id
        self.dimension = inner.dimension
        self.max_tokens = inner.max_tokens
        self.batch_size = inner.batch_size

    @property
    def special_tokens(self) -> int:
        return self.inner.special_tokens

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return self.inner.count_tokens(texts)

    def _encode(self, texts: Sequence[str]) -> list[Vector]:
        return self.inner._encode(texts)

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        vectors: list[Vector] = []
        self.report(0, len(texts))
        for start in range(0, len(texts), PROGRESS_SLICE):
            vectors += self.inner.embed(texts[start : start + PROGRESS_SLICE])
            self.report(len(vectors), len(texts))
        return vectors


_ABSOLUTE_PATH = re.compile(r"(?<![\w.-])/(?:[^\s'\"/:]+/)+[^\s'\":,;)]*")
"""An absolute POSIX path of two or more parts in a message (not a relative `a/b` such as
`application/pdf`): a server path, whatever else a library put in its error."""
SERVER_PATH = "<server path>"


def public_reason(message: str, stored: Path, name: str, hidden: Sequence[Path]) -> str:
    """A failure reason as a tenant may see it (`last_error.message`, the console's job view):
    the `stored` file's path replaced by `name` (the name it was uploaded under), and no other
    server path left in it (the folders in `hidden`, such as the data directory, or any other
    absolute path). The reason itself stays as `ragtune ingest` gives it."""
    placeholder = "\x00"  # the name goes in last: it is data, and may look like a path
    for form in _spellings([stored]):
        message = message.replace(form, placeholder)
    for form in _spellings(hidden):
        message = message.replace(form, SERVER_PATH)
    message = _ABSOLUTE_PATH.sub(SERVER_PATH, message)
    return message.replace(placeholder, name)


def _spellings(paths: Sequence[Path]) -> list[str]:
    """How a message may spell each path (as given, absolute, symlinks resolved), longest
    first, so that a folder's path is never replaced inside a longer one."""
    forms = {form for path in paths for form in (str(path.absolute()), str(path.resolve()))}
    return sorted((form for form in forms if form.strip("/")), key=len, reverse=True)


def drop_partial(collection: Collection, doc_id: str) -> int:
    """Remove the chunks of `doc_id` unless they are exactly one whole version of it (an
    interrupted write leaves fewer than it counts): what no reader may find. The count
    removed."""
    chunks = list(collection.scan(where={"doc_id": doc_id}))
    hashes = {str(c.metadata.get("doc_hash", "")) for c in chunks}
    counts = {c.metadata.get("n_chunks") for c in chunks}
    if not chunks or (len(hashes) == 1 and counts == {len(chunks)}):
        return 0
    collection.delete([c.id for c in chunks])
    return len(chunks)


def remove_document(collection: Collection, doc_id: str) -> int:
    """Remove every chunk of `doc_id`; the count removed."""
    ids = [c.id for c in collection.scan(where={"doc_id": doc_id})]
    collection.delete(ids)
    return len(ids)


class IngestJobs:
    """The background ingestion of attached files: `concurrency` worker threads, each job's
    status and progress in the catalog, a lock per collection that its writes and removals
    take (so a removal never races a job's write; a job takes it only once it has embedded).

    Usage:
        jobs = IngestJobs(catalog, store, embedder, retrieval, ingest, lexical)
        jobs.start()                        # resumes what a stopped server left in progress
        jobs.submit("handbook", "file-...")  # after catalog.attach(...)
        jobs.list_jobs()                    # status and progress, for operators
        jobs.close()                        # running jobs stop; they resume at the next start
    """

    def __init__(
        self,
        catalog: FileCatalog,
        store: VectorStore,
        embedder: Embedder,
        retrieval: RetrievalSettings,
        ingest: IngestSettings,
        lexical: LexicalIndexes,
        *,
        concurrency: int = 1,
        on_changed: Callable[[str], None] | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.embedder = embedder
        self.retrieval = retrieval
        self.ingest = ingest
        self.lexical = lexical
        self.concurrency = concurrency
        self.on_changed = on_changed or (lambda name: None)
        """Told the name of a collection a job wrote, a removal changed or a deletion removed
        (this process's readers of it read it afresh at once)."""
        self._executor: ThreadPoolExecutor | None = None
        self._stopping = threading.Event()
        self._cancelled: set[tuple[str, str]] = set()
        self._futures: dict[tuple[str, str], Future[None]] = {}
        self._latest: dict[tuple[str, str], int] = {}
        """Each attachment's latest submission: only its job may write (a file detached and
        attached again while its first job embeds gets a second job, and the first must stop).
        These three hold only jobs queued or running: an attachment's entries go when its
        latest job ends (`_forget`)."""
        self._submissions = itertools.count()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def start(self) -> None:
        """Start the workers, after making what a stopped server left in progress safe: the
        removals it did not finish done; any chunks of an unfinished write removed, then the
        job queued again (failed, saying why, when its file is gone)."""
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="ragtune-ingest")
        for job in self.catalog.attachments(status="cancelled"):
            logger.info("finishing the removal of %s from %s", job.file_id, job.vector_store)
            self._remove_chunks(job)
            self.catalog.detach(job.vector_store, job.file_id)
        for job in self.catalog.attachments(status="in_progress"):
            try:
                collection = self._collection(job.vector_store)
                removed = drop_partial(collection, job.doc_id)
            except Exception as exc:
                logger.warning("cannot resume ingestion of %s: %s", job.file_id, exc)
                self._fail(job, "server_error", "the server stopped during ingestion and could "
                           "not resume it; attach the file again")  # fmt: skip
                continue
            if removed:
                self.lexical.current(collection, save=True)
                self.on_changed(job.vector_store)
                logger.info("removed %d chunks of an unfinished write of %s", removed, job.file_id)
            logger.info("resuming the ingestion of %s into %s", job.file_id, job.vector_store)
            self.submit(job.vector_store, job.file_id)

    def close(self) -> None:
        """Stop: running jobs stop at their next progress report (they stay in_progress and
        run again at the next start); queued ones are not started."""
        self._stopping.set()
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)

    def lock(self, collection: str) -> threading.Lock:
        """The lock of a collection's writes (jobs) and removals (deletes)."""
        with self._guard:
            return self._locks.setdefault(collection, threading.Lock())

    def submit(self, vector_store: str, file_id: str) -> None:
        """Queue the ingestion of an attachment recorded in the catalog."""
        if self._executor is None:
            raise RuntimeError("IngestJobs.start() first")
        key = (vector_store, file_id)
        with self._guard:
            self._cancelled.discard(key)
            submission = self._latest[key] = next(self._submissions)
            future = self._executor.submit(self._run, vector_store, file_id, submission)
            self._futures[key] = future
        # Outside the guard: a future already done calls back at once, in this thread.
        future.add_done_callback(lambda ended: self._forget(key, submission, ended))

    def _forget(self, key: tuple[str, str], submission: int, ended: Future[None]) -> None:
        """An attachment's entries once its latest job has ended (run, stopped or cancelled
        before it ran); an older job's end leaves the newer one's."""
        with self._guard:
            if self._futures.get(key) is ended and self._latest.get(key) == submission:
                del self._futures[key], self._latest[key]
                self._cancelled.discard(key)

    def cancel(self, vector_store: str, file_id: str) -> None:
        """Stop a queued or running job (it writes nothing more); a finished one is untouched."""
        key = (vector_store, file_id)
        with self._guard:
            future = self._futures.get(key)
            if future is not None:
                self._cancelled.add(key)
        if future is not None:
            future.cancel()

    def wait(self, vector_store: str, file_id: str, timeout: float | None = None) -> None:
        """Block until the job has ended, however it ends (cancelled included, by any thread);
        TimeoutError after `timeout` seconds. For tools and tests: the API polls instead."""
        with self._guard:
            future = self._futures.get((vector_store, file_id))
        if future is not None and futures.wait([future], timeout).not_done:
            raise TimeoutError(f"the job of {file_id} in {vector_store} has not ended")

    def list_jobs(self, status: AttachmentStatus | None = None) -> list[JobInfo]:
        """Every ingestion job (of every tenant), oldest first, with its status, progress and
        failure reason: what the operator console shows."""
        jobs = []
        for job in self.catalog.attachments(status=status):
            record = self.catalog.file(job.file_id)
            filename = record.filename if record else ""
            jobs.append(
                JobInfo(
                    job.vector_store,
                    job.file_id,
                    job.tenant,
                    filename,
                    job.status,
                    job.chunks_done,
                    job.chunks_total,
                    job.created_at,
                    job.error_message,
                )
            )
        return jobs

    def remove(self, job: Attachment) -> None:
        """Detach a file from its store: its job stopped, every chunk of its document removed
        (the lexical index too), its record gone. The record says `cancelled` until the chunks
        are gone: a server stopped in between finishes the removal at its next start, and
        meanwhile no listing calls what is left of the document complete. Waits at most for a
        write in progress in the store, never for an embedding: a job still embedding stops
        at its next progress report or, at the latest, when it comes to write."""
        self.cancel(job.vector_store, job.file_id)
        self.catalog.update(job.vector_store, job.file_id, status="cancelled")
        with self.lock(job.vector_store):
            self._remove_chunks(job)
            self.catalog.detach(job.vector_store, job.file_id)

    def _remove_chunks(self, job: Attachment) -> None:
        try:
            collection = self.store.collection(job.vector_store, self.embedder.model_id)
        except CollectionNotFoundError:
            return
        if remove_document(collection, job.doc_id):
            self.lexical.current(collection, save=True)
            self.on_changed(job.vector_store)

    def drop_store(self, name: str) -> None:
        """Delete a vector store: its jobs stopped, its collection and lexical index deleted,
        its records gone."""
        for job in self.catalog.attachments(vector_store=name):
            self.cancel(name, job.file_id)
        with self.lock(name):
            if any(info.name == name for info in self.store.list_collections()):
                self.store.delete_collection(name)
            self.lexical.drop(name)
            self.catalog.forget_store(name)
            self.on_changed(name)

    # The work

    def _collection(self, name: str) -> Collection:
        return self.store.collection(name, self.embedder.model_id, create=True)

    def _stopped(self, key: tuple[str, str], submission: int) -> bool:
        """Whether a job must stop: the server is stopping, the job was cancelled, or its file
        was attached again since (the newer job ingests it)."""
        return (
            self._stopping.is_set() or key in self._cancelled or self._latest.get(key) != submission
        )

    @contextmanager
    def _writing(self, job: Attachment, submission: int) -> Iterator[None]:
        """The store's lock, held while a job writes: its chunks, then its outcome. JobStopped
        (the lock released) when the job may no longer write: a detach sets the record
        `cancelled`, then removes the document and the record under this lock, so a job that
        wrote after it would leave chunks that no record can remove; a file attached again
        meanwhile has a new record and a newer job, which writes instead."""
        key = (job.vector_store, job.file_id)
        with self.lock(job.vector_store):
            current = self.catalog.attachment(job.vector_store, job.file_id)
            if (
                self._stopped(key, submission)
                or current is None
                or current.status != "in_progress"
                or current.created_at != job.created_at
            ):
                raise JobStopped
            yield

    def _fail(self, job: Attachment, code: ErrorCode, message: str) -> None:
        """Record the job as failed. The message is shown to the tenant (and in the console):
        it names the file by the name it was uploaded under, never by a server path."""
        record = self.catalog.file(job.file_id)
        stored = self.catalog.path(record) if record else self.catalog.root / job.file_id
        name = record.filename if record else job.file_id
        hidden = [self.catalog.root, self.retrieval.data_dir]
        message = public_reason(message, stored, name, hidden)
        self.catalog.update(
            job.vector_store, job.file_id, status="failed", error_code=code, error_message=message
        )

    def _run(self, vector_store: str, file_id: str, submission: int) -> None:
        key = (vector_store, file_id)
        job = self.catalog.attachment(vector_store, file_id)
        if job is None or job.status != "in_progress" or self._stopped(key, submission):
            return
        try:
            self._ingest(job, submission)
        except JobStopped:
            logger.info("ingestion of %s into %s stopped", file_id, vector_store)
        except Exception:
            logger.exception("ingestion of %s into %s failed", file_id, vector_store)
            if not self._stopped(key, submission):  # else the record is no longer this job's
                self._fail(job, "server_error", "ingestion failed on the server (its log says why)")

    def _ingest(self, job: Attachment, submission: int) -> None:
        record = self.catalog.file(job.file_id)
        path = self.catalog.path(record) if record else None
        if record is None or path is None or not path.is_file():
            self._fail(job, "server_error", "the uploaded file is gone; upload it again")
            return
        collection = self._collection(job.vector_store)
        key = (job.vector_store, job.file_id)

        def report(done: int, total: int) -> None:
            if self._stopped(key, submission):
                raise JobStopped
            self.catalog.update(job.vector_store, job.file_id, chunks_done=done, chunks_total=total)

        embedder = _ProgressEmbedder(
            collection_embedder(collection, self.retrieval, self.embedder), report
        )
        service = IngestService(
            self.ingest,
            collection,
            lambda: embedder,
            writing=lambda: self._writing(job, submission),
        )
        summary = service.run_file(Path(path), record.filename)
        with self._writing(job, submission):
            # The lexical index here, not in the run: its rebuild is a write of the store too.
            self.lexical.current(collection, save=True)
            self.on_changed(job.vector_store)
            (result,) = summary.files
            if result.status == FileStatus.FAILED:
                unsupported = file_type_of(Path(record.stored_name)) is None
                code: ErrorCode = "unsupported_file" if unsupported else "invalid_file"
                self._fail(job, code, result.reason or "the file cannot be read")
            else:
                self.catalog.update(
                    job.vector_store, job.file_id, status="completed", chunks_done=result.chunks,
                    chunks_total=result.chunks, error_code=None, error_message=None,
                )  # fmt: skip
        record_run(self.retrieval.data_dir, summary)
