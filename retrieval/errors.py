"""Errors of the store and the embedder, each with a message a user can act on."""


class RetrievalError(Exception):
    """Base of retrieval errors; `str(error)` is meant for the user."""


class EmbeddingModelError(RetrievalError):
    """The embedding model cannot be loaded."""


class EmbeddingModelMismatchError(RetrievalError):
    """A collection was built with another embedding model than the one configured."""


class ChunkTooLongError(RetrievalError):
    """A text is longer than the embedding model reads: it would be silently truncated."""


class StoreBusyError(RetrievalError):
    """The embedded store is held by another process."""


class StoreUnavailableError(RetrievalError):
    """The store cannot be reached or opened."""


class StagingDroppedError(RetrievalError):
    """A collection's rebuilt copy was dropped by another rebuild of the same collection."""


class CollectionNotFoundError(RetrievalError):
    """The named collection does not exist."""

    def __init__(self, message: str, collection: str | None = None) -> None:
        super().__init__(message)
        self.collection = collection


class InvalidFilterError(RetrievalError):
    """A search filter is malformed."""
