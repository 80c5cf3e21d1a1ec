"""Documents in a collection: list them, remove them (every chunk of each)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ragtune.ingest.errors import DocumentNotFoundError
from ragtune.retrieval.store import Collection


@dataclass
class DocumentInfo:
    source: str
    doc_id: str
    title: str
    file_type: str
    chunks: int
    ingested_at: str
    meta: dict[str, str] = field(default_factory=dict)


def list_documents(collection: Collection) -> list[DocumentInfo]:
    documents: dict[str, DocumentInfo] = {}
    for chunk in collection.scan():
        meta = chunk.metadata
        doc_id = str(meta.get("doc_id", ""))
        info = documents.get(doc_id)
        if info is None:
            keys = [k for k in str(meta.get("meta_keys", "")).split(",") if k]
            info = documents[doc_id] = DocumentInfo(
                source=str(meta.get("source", "")),
                doc_id=doc_id,
                title=str(meta.get("title", "")),
                file_type=str(meta.get("file_type", "")),
                chunks=0,
                ingested_at=str(meta.get("ingested_at", "")),
                meta={k: str(meta[k]) for k in keys if k in meta},
            )
        info.chunks += 1
        info.ingested_at = max(info.ingested_at, str(meta.get("ingested_at", "")))
    return sorted(documents.values(), key=lambda d: d.source)


def absolute(path: Path | str) -> Path:
    """`path` absolute, with "~", "." and ".." read (`../docs` from within `docs/` is `docs`, not
    a second copy of every document): how a document's path is stored. A ".." after a symbolic
    link is left as given when reading it away would name another place than the system reads
    (`link/../docs` is the link's target's sibling)."""
    given = Path(path).expanduser().absolute()
    normal = Path(os.path.normpath(given))
    if ".." in given.parts and os.path.realpath(normal) != os.path.realpath(given):
        return given
    return normal


def remove_documents(collection: Collection, sources: Sequence[str]) -> list[DocumentInfo]:
    """Remove the documents named by path (a file, or a folder for all below it) or by id.

    Nothing is removed unless every name matches at least one document. An empty name matches
    none (read as a path it would be the current folder: a shell variable left unset would
    remove every document under it).
    """
    if blank := [given for given in sources if not given.strip()]:
        raise DocumentNotFoundError(
            f"{len(blank)} of the names given {'is' if len(blank) == 1 else 'are'} empty "
            "(nothing was removed): give document paths or ids; for every document under the "
            "current folder, give '.'"
        )
    # Each stored path normalised once; documents stored before paths were normalised match too.
    documents = [(d, absolute(d.source)) for d in list_documents(collection)]
    chosen: dict[str, DocumentInfo] = {}
    unmatched = []
    for given in sources:
        target = absolute(given)
        matches = [
            d
            for d, path in documents
            if given in (d.doc_id, d.source) or path == target or target in path.parents
        ]
        if not matches:
            unmatched.append(given)
        for d in matches:
            chosen[d.doc_id] = d
    if unmatched:
        raise DocumentNotFoundError(
            f"not in collection {collection.name!r}: {', '.join(unmatched)} (nothing was "
            "removed); `ragtune docs list` shows what is there"
        )
    for doc in chosen.values():
        ids = [chunk.id for chunk in collection.scan(where={"doc_id": doc.doc_id})]
        collection.delete(ids)
    return sorted(chosen.values(), key=lambda d: d.source)
