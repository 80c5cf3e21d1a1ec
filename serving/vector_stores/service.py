"""Vector stores: ragtune's collections in OpenAI's shape. A store's id is its collection's
name; the caller sees a store only when its principal sees that collection (any other answers
exactly as a missing one). Attaching a file queues its ingestion (`jobs.IngestJobs`); its status
and progress are read back from the catalog; detaching removes the document's chunks."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace

from ragtune.ingest.pipeline import document_id
from ragtune.retrieval.errors import CollectionNotFoundError, RetrievalError
from ragtune.retrieval.search import SearchHit
from ragtune.retrieval.settings import check_collection_name
from ragtune.retrieval.store import Collection, VectorStore
from ragtune.serving.chat.protocol import RagtuneOptions
from ragtune.serving.errors import (
    FileBatchNotFoundError,
    ForbiddenError,
    InvalidRequestError,
    QuotaExceededError,
    ServingError,
    UploadedFileNotFoundError,
    VectorStoreNotFoundError,
    shorten,
)
from ragtune.serving.files.catalog import (
    Attachment,
    AttachmentStatus,
    FileBatch,
    FileCatalog,
    FileRecord,
    now,
)
from ragtune.serving.files.service import FileService, Order, page
from ragtune.serving.protocol import check_json_values
from ragtune.serving.retrievers import RetrieverCache, merge_ranked
from ragtune.serving.tenants.principal import Principal
from ragtune.serving.vector_stores.jobs import IngestJobs
from ragtune.serving.vector_stores.protocol import (
    MAX_SEARCH_RESULTS,
    CreateFileBatchRequest,
    CreateVectorStoreRequest,
    FileCounts,
    IngestProgress,
    LastError,
    SearchContent,
    VectorStoreDeleted,
    VectorStoreFileBatchObject,
    VectorStoreFileDeleted,
    VectorStoreFileList,
    VectorStoreFileObject,
    VectorStoreInfo,
    VectorStoreList,
    VectorStoreObject,
    VectorStoreSearchPage,
    VectorStoreSearchRequest,
    VectorStoreSearchResult,
)

logger = logging.getLogger("ragtune.files")
METADATA_KEY = "vector_store_metadata"
"""Where a store's `metadata` (OpenAI's key-value pairs, as JSON) is kept: in its collection's
own metadata, so that it goes wherever the collection goes."""
MAX_METADATA_PAIRS, MAX_METADATA_KEY_CHARS, MAX_METADATA_VALUE_CHARS = 16, 64, 512
"""OpenAI's bounds on `metadata`."""
POLL_AFTER_MS = 250
"""How soon a client polling a file in progress is told to ask again (`openai-poll-after-ms`)."""


class VectorStoreService:
    """Create, list, read and delete vector stores; attach, list, read and detach their files.

    Usage:
        stores = VectorStoreService(catalog, store, embedding_model, files, jobs)
        stores.create(principal, CreateVectorStoreRequest(name="handbook"))
        stores.attach(principal, "handbook", file_id)     # ingestion starts in the background
        stores.file(principal, "handbook", file_id).status   # in_progress, then completed
    """

    def __init__(
        self,
        catalog: FileCatalog,
        store: VectorStore,
        embedding_model: str,
        files: FileService,
        jobs: IngestJobs,
        retrievers: RetrieverCache | None = None,
    ) -> None:
        self.catalog = catalog
        self.store = store
        self.embedding_model = embedding_model
        self.files = files
        self.jobs = jobs
        self.retrievers = retrievers
        """What `search` searches with (the chat API's retrievers); None: no search."""
        self._queueing = threading.Lock()
        """Held while a tenant's ingestions in progress are counted and one is added."""

    # Stores

    def _collection(self, principal: Principal, store_id: str) -> Collection:
        """The collection of a store the caller sees; VectorStoreNotFoundError otherwise (the
        same for one that exists and one that does not)."""
        missing = VectorStoreNotFoundError(f"no vector store with id {shorten(store_id)!r}")
        if not principal.sees_collection(store_id):
            raise missing
        try:
            return self.store.collection(store_id, self.embedding_model)
        except CollectionNotFoundError:
            raise missing from None
        except RetrievalError:
            if _valid_name(store_id):
                raise
            raise missing from None

    def _object(self, principal: Principal, collection: Collection) -> VectorStoreObject:
        name = collection.name
        created = self.catalog.touch_store(name)
        jobs = self.catalog.attachments(vector_store=name, tenant=principal.tenant)
        counts = Counter(job.status for job in jobs)
        return VectorStoreObject(
            id=name,
            name=name,
            created_at=created,
            last_active_at=max([created, *(job.created_at for job in jobs)]),
            usage_bytes=sum(job.usage_bytes for job in jobs if job.status == "completed"),
            file_counts=FileCounts(
                in_progress=counts["in_progress"],
                completed=counts["completed"],
                failed=counts["failed"],
                cancelled=counts["cancelled"],
                total=len(jobs),
            ),
            status="in_progress" if counts["in_progress"] else "completed",
            metadata=_stored_metadata(collection),
            ragtune=VectorStoreInfo(collection=name, chunks=collection.count()),
        )

    def create(self, principal: Principal, request: CreateVectorStoreRequest) -> VectorStoreObject:
        """The store named `request.name` (its collection created when missing), with
        `request.file_ids` attached (all of them, or none and no store made when they would
        take the tenant past its ingestions in progress) and `request.metadata` kept (in place
        of any it had)."""
        if request.model_extra:
            logger.info("vector store fields ignored: %s", ", ".join(sorted(request.model_extra)))
        check_json_values(request.model_dump(exclude_none=True))
        name = request.name or f"vs_{uuid.uuid4().hex[:24]}"
        if not _valid_name(name):
            raise InvalidRequestError(
                f"name {shorten(name)!r} cannot name a collection: 3 to 512 letters, digits, "
                "'.', '_' or '-', starting and ending with a letter or digit",
                param="name",
            )
        if not principal.sees_collection(name):
            if not request.name:  # a new store would be a new collection: one it was not given
                given = ", ".join(sorted(principal.collections or ())) or "it was given none"
                raise ForbiddenError(
                    "this API key may use only the collections it was given: give `name`, one "
                    f"of them ({given})"
                )
            raise ForbiddenError(
                "this API key may use only the collections it was given; ask an operator for "
                "a key that includes this one"
            )
        if request.metadata is not None:
            _check_metadata(request.metadata)
        records = [self.files.record(principal, file_id) for file_id in request.file_ids]
        with self._queueing:
            fresh = self._not_queued(name, records)
            self._check_pending(principal, len(fresh))
            collection = self.store.collection(name, self.embedding_model, create=True)
            self.catalog.touch_store(name)
            self._queue(principal, name, fresh)
        if request.metadata is not None:
            with self.jobs.lock(name):  # a write's revision stamp rewrites the same metadata
                collection.set_metadata_value(METADATA_KEY, json.dumps(request.metadata))
        return self._object(principal, collection)

    def get(self, principal: Principal, store_id: str) -> VectorStoreObject:
        return self._object(principal, self._collection(principal, store_id))

    def list(
        self,
        principal: Principal,
        *,
        limit: int = 10_000,
        after: str | None = None,
        order: Order = "desc",
    ) -> VectorStoreList:
        names = sorted(
            info.name
            for info in self.store.list_collections()
            if principal.sees_collection(info.name)
        )
        chosen, more = page(names, lambda name: name, limit, after, order)
        data = []
        for name in chosen:
            try:
                data.append(self._object(principal, self._collection(principal, name)))
            except RetrievalError as exc:  # e.g. embedded with another model: not a store here
                logger.info("collection %s is not listed as a vector store: %s", name, exc)
        return VectorStoreList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    def delete(self, principal: Principal, store_id: str) -> VectorStoreDeleted:
        """Delete the store: its collection, every chunk in it (lexical index too) and its
        file attachments. The files themselves stay. An operator action: the collection may
        hold documents of other keys and of `ragtune ingest`, so only an admin key may; a
        tenant detaches its own files instead."""
        collection = self._collection(principal, store_id)
        if not principal.admin:
            raise ForbiddenError(
                "deleting a vector store deletes its collection for every key that uses it: "
                "that needs an admin key; detach your files from it instead "
                "(DELETE /v1/vector_stores/{id}/files/{file_id})"
            )
        self.jobs.drop_store(collection.name)
        return VectorStoreDeleted(id=collection.name)

    # Files of a store

    def _attachment(self, principal: Principal, store_id: str, file_id: str) -> Attachment:
        self._collection(principal, store_id)
        found = self.catalog.attachment(store_id, file_id)
        if found is None or (found.tenant != principal.tenant and not principal.admin):
            raise UploadedFileNotFoundError(
                f"no file with id {shorten(file_id)!r} in vector store {shorten(store_id)!r}"
            )
        return found

    def _file_object(self, job: Attachment) -> VectorStoreFileObject:
        record = self.catalog.file(job.file_id)
        error = None
        if job.error_code is not None:
            error = LastError(code=job.error_code, message=job.error_message or "")
        return VectorStoreFileObject(
            id=job.file_id,
            created_at=job.created_at,
            usage_bytes=job.usage_bytes if job.status == "completed" else 0,
            vector_store_id=job.vector_store,
            status=job.status,
            last_error=error,
            ragtune=IngestProgress(
                filename=record.filename if record else "",
                chunks_done=job.chunks_done,
                chunks_total=job.chunks_total,
            ),
        )

    def attach(self, principal: Principal, store_id: str, file_id: str) -> VectorStoreFileObject:
        """Attach one of the caller's files: its ingestion is queued (status in_progress). A
        file already being ingested into the store is answered as it is."""
        collection = self._collection(principal, store_id)
        record = self.files.record(principal, file_id)
        with self._queueing:
            existing = self.catalog.attachment(collection.name, record.id)
            if existing is not None and existing.status == "in_progress":
                return self._file_object(existing)
            self._check_pending(principal, 1)
            (job,) = self._queue(principal, collection.name, [record])
        return self._file_object(job)

    def _not_queued(self, store: str, records: Sequence[FileRecord]) -> Sequence[FileRecord]:
        """The files (each once) not already being ingested into the store: those attaching
        `records` would queue. Under `_queueing`, with the check and the queueing after it."""
        queued = self.catalog.attachments(vector_store=store, status="in_progress")
        being_ingested = {job.file_id for job in queued}
        return list({r.id: r for r in records if r.id not in being_ingested}.values())

    def _queue(
        self, principal: Principal, store: str, records: Sequence[FileRecord]
    ) -> Sequence[Attachment]:
        """Attach the files and queue their ingestion (status in_progress). Under `_queueing`,
        in the same hold as the check of the tenant's ingestions in progress: two requests at
        the same moment must not both pass the check, then both attach."""
        jobs = [
            Attachment(
                vector_store=store,
                file_id=record.id,
                tenant=principal.tenant,
                status="in_progress",
                created_at=now(),
                doc_id=document_id(str(self.catalog.path(record))),
                usage_bytes=record.bytes,
            )
            for record in records
        ]
        for job in jobs:
            self.catalog.attach(job)
            self.jobs.submit(job.vector_store, job.file_id)
        return jobs

    def _check_pending(self, principal: Principal, adding: int) -> None:
        """QuotaExceededError when `adding` more ingestions would take the caller's tenant past
        the ingestions it may have in progress at once (an admin key's are not bounded): one
        tenant cannot fill the queue that every tenant's attachments wait in."""
        if principal.admin or adding <= 0:
            return
        limit = self.files.settings.tenant_max_pending_ingests
        pending = len(self.catalog.attachments(tenant=principal.tenant, status="in_progress"))
        if pending + adding > limit:
            raise QuotaExceededError(
                f"this tenant has {pending} file(s) being ingested and may have {limit} at once "
                "(RAGTUNE_TENANT_MAX_PENDING_INGESTS); wait until some are completed or failed "
                "(GET /v1/vector_stores/{id}/files shows their status), then attach again"
            )

    def file(self, principal: Principal, store_id: str, file_id: str) -> VectorStoreFileObject:
        return self._file_object(self._attachment(principal, store_id, file_id))

    def list_files(
        self,
        principal: Principal,
        store_id: str,
        *,
        limit: int = 10_000,
        after: str | None = None,
        order: Order = "desc",
        status: AttachmentStatus | None = None,
    ) -> VectorStoreFileList:
        collection = self._collection(principal, store_id)
        jobs = self.catalog.attachments(
            vector_store=collection.name, tenant=principal.tenant, status=status
        )
        return self._file_list(jobs, limit, after, order)

    def _file_list(
        self, jobs: Sequence[Attachment], limit: int, after: str | None, order: Order
    ) -> VectorStoreFileList:
        """One page of attached files (`jobs` oldest first)."""
        chosen, more = page(jobs, lambda job: job.file_id, limit, after, order)
        data = [self._file_object(job) for job in chosen]
        return VectorStoreFileList(
            data=data,
            first_id=data[0].id if data else None,
            last_id=data[-1].id if data else None,
            has_more=more,
        )

    def detach(self, principal: Principal, store_id: str, file_id: str) -> VectorStoreFileDeleted:
        """Detach a file: its ingestion stopped, every chunk of it removed from the collection
        and its lexical index. The file itself stays."""
        self.jobs.remove(self._attachment(principal, store_id, file_id))
        return VectorStoreFileDeleted(id=file_id)

    # Search

    def search(
        self, principal: Principal, store_id: str, request: VectorStoreSearchRequest
    ) -> VectorStoreSearchPage:
        """The store's best passages for the query, as chat's retrieval finds them (hybrid
        search with the collection's fusion and any reranking stage), each with the file it
        came from. A list of queries is searched query by query, the results interleaved by
        rank (each passage once). Blocking: embeds the queries."""
        if request.model_extra:
            logger.info("search fields ignored: %s", ", ".join(sorted(request.model_extra)))
        check_json_values(request.model_dump(exclude_none=True))  # no tokenizer takes them
        try:
            texts = request.queries()
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="query") from None
        try:
            filters = request.metadata_filters()
            RagtuneOptions(filters=filters).check_filters()
        except (ValueError, InvalidRequestError) as exc:
            raise InvalidRequestError(str(exc), param="filters") from None
        collection = self._collection(principal, store_id)
        if self.retrievers is None:
            raise ServingError("this server has no retrievers: search is not available")
        embedder = self.retrievers.embedder_for(collection.name)
        k = request.max_num_results
        options = request.ranking_options
        threshold = options.score_threshold if options and options.score_threshold else 0.0
        # With a threshold, passages below it (one only BM25 found scores 0) leave places to
        # deeper ones that reach it: searched as deep as a result may be (50), and as a
        # reranking stage reorders.
        depth = self.retrievers.depth(MAX_SEARCH_RESULTS if threshold else k)
        ranked = [
            self.retrievers.search(
                text,
                embedder.embed_query(text),
                k=depth,
                collection=collection.name,
                filters=filters or None,
                required=True,
                model=embedder.model_id,
            )
            for text in texts
        ]
        seen: set[str] = set()
        hits = []
        for hit in merge_ranked(ranked, depth * len(ranked)):
            if hit.chunk_id not in seen:
                seen.add(hit.chunk_id)
                hits.append(hit)
        reaching = [hit for hit in hits if _score(hit) >= threshold][:k]
        return VectorStoreSearchPage(search_query=texts, data=self.results(reaching))

    def results(self, hits: Sequence[SearchHit]) -> Sequence[VectorStoreSearchResult]:
        """Passages (of any stores) as search results, in order: each with the file it came
        from (an uploaded file's id and name; a document `ragtune ingest` ingested, its id and
        its path below the folder ingested), its similarity to the query and its attributes.
        Blocking: reads the catalog."""
        uploaded: dict[tuple[str, str], Attachment] = {}
        for name in dict.fromkeys(hit.collection for hit in hits):
            for attached in self.catalog.attachments(vector_store=name):
                uploaded[name, attached.doc_id] = attached
        data = []
        for hit in hits:
            document_id = str(hit.metadata.get("doc_id", ""))
            job = uploaded.get((hit.collection, document_id))
            record = self.catalog.file(job.file_id) if job else None
            data.append(
                VectorStoreSearchResult(
                    file_id=record.id if record else document_id,
                    filename=record.filename if record else hit.document,
                    score=_score(hit),
                    attributes={
                        "heading": str(hit.metadata.get("heading", "")),
                        "section": hit.section,
                        "chunk_id": hit.chunk_id,
                        "document_id": document_id,
                    },
                    content=[SearchContent(text=hit.text)],
                )
            )
        return data

    # File batches

    def create_batch(
        self, principal: Principal, store_id: str, request: CreateFileBatchRequest
    ) -> VectorStoreFileBatchObject:
        """Attach several of the caller's files at once (each as `attach` would), within the
        tenant's ingestions in progress: all of them, or none when one is not the caller's or
        they would go past the bound."""
        if request.model_extra:
            logger.info("file batch fields ignored: %s", ", ".join(sorted(request.model_extra)))
        try:
            file_ids = request.ids()
        except ValueError as exc:
            raise InvalidRequestError(str(exc), param="file_ids") from None
        collection = self._collection(principal, store_id)
        records = [self.files.record(principal, file_id) for file_id in file_ids]
        with self._queueing:
            fresh = self._not_queued(collection.name, records)
            self._check_pending(principal, len(fresh))
            self._queue(principal, collection.name, fresh)
        batch = FileBatch(
            id=f"vsfb_{uuid.uuid4().hex}",
            vector_store=collection.name,
            tenant=principal.tenant,
            created_at=now(),
            cancelled=False,
            file_ids=tuple(record.id for record in records),
        )
        self.catalog.add_batch(batch)  # once its files are attached: a refused one leaves none
        return self._batch_object(batch)

    def _batch(self, principal: Principal, store_id: str, batch_id: str) -> FileBatch:
        self._collection(principal, store_id)
        found = self.catalog.batch(batch_id)
        if (
            found is None
            or found.vector_store != store_id
            or (found.tenant != principal.tenant and not principal.admin)
        ):
            raise FileBatchNotFoundError(
                f"no file batch with id {shorten(batch_id)!r} in vector store {shorten(store_id)!r}"
            )
        return found

    def _batch_jobs(self, batch: FileBatch) -> tuple[Attachment | None, ...]:
        """Each file's attachment to the store (None: detached since)."""
        return tuple(self.catalog.attachment(batch.vector_store, f) for f in batch.file_ids)

    def _batch_object(self, batch: FileBatch) -> VectorStoreFileBatchObject:
        statuses = [job.status if job else "cancelled" for job in self._batch_jobs(batch)]
        counts = Counter(statuses)
        if counts["in_progress"]:
            status = "in_progress"
        elif batch.cancelled:
            status = "cancelled"
        elif counts["failed"] == len(statuses):
            status = "failed"
        else:
            status = "completed"
        return VectorStoreFileBatchObject(
            id=batch.id,
            created_at=batch.created_at,
            vector_store_id=batch.vector_store,
            status=status,
            file_counts=FileCounts(
                in_progress=counts["in_progress"],
                completed=counts["completed"],
                failed=counts["failed"],
                cancelled=counts["cancelled"],
                total=len(statuses),
            ),
        )

    def batch(
        self, principal: Principal, store_id: str, batch_id: str
    ) -> VectorStoreFileBatchObject:
        return self._batch_object(self._batch(principal, store_id, batch_id))

    def cancel_batch(
        self, principal: Principal, store_id: str, batch_id: str
    ) -> VectorStoreFileBatchObject:
        """Stop the batch: its files still in progress are detached (their ingestion stopped,
        anything written removed); those already completed or failed stay as they are."""
        batch = self._batch(principal, store_id, batch_id)
        self.catalog.cancel_batch(batch.id)
        for job in self._batch_jobs(batch):
            if job is not None and job.status == "in_progress":
                self.jobs.remove(job)
        return self._batch_object(replace(batch, cancelled=True))

    def list_batch_files(
        self,
        principal: Principal,
        store_id: str,
        batch_id: str,
        *,
        limit: int = 10_000,
        after: str | None = None,
        order: Order = "desc",
        status: AttachmentStatus | None = None,
    ) -> VectorStoreFileList:
        """The batch's files still attached to the store, with their status."""
        batch = self._batch(principal, store_id, batch_id)
        jobs = [
            job
            for job in self._batch_jobs(batch)
            if job is not None and (status is None or job.status == status)
        ]
        jobs.sort(key=lambda job: job.created_at)
        return self._file_list(jobs, limit, after, order)


def _check_metadata(metadata: dict[str, str]) -> None:
    """InvalidRequestError unless `metadata` is within OpenAI's bounds."""
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequestError(
            f"metadata: at most {MAX_METADATA_PAIRS} key-value pairs", param="metadata"
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY_CHARS or len(value) > MAX_METADATA_VALUE_CHARS:
            raise InvalidRequestError(
                f"metadata: keys of at most {MAX_METADATA_KEY_CHARS} characters, values of at "
                f"most {MAX_METADATA_VALUE_CHARS}; {shorten(key)!r} is over",
                param="metadata",
            )


def _stored_metadata(collection: Collection) -> dict[str, str]:
    """The store's `metadata`, as its last create with one gave it ({} when none did)."""
    try:
        stored = json.loads(str(collection.metadata().get(METADATA_KEY) or "{}"))
    except ValueError:
        return {}
    if not isinstance(stored, dict):
        return {}
    return {str(key): str(value) for key, value in stored.items()}


def _valid_name(name: str) -> bool:
    try:
        check_collection_name(name)
    except ValueError:
        return False
    return True


def _score(hit: SearchHit) -> float:
    """A result's `score`: its similarity to the query, 0..1 (what a threshold reads)."""
    return round(max(0.0, min(1.0, hit.similarity)), 4)
