"""Ingestion errors, each with a message a user can act on."""


class IngestError(Exception):
    """Base of ingestion errors; `str(error)` is meant for the user."""


class DocumentLoadError(IngestError):
    """One file cannot be read as a document; the run goes on with the others."""


class UnsupportedFileTypeError(DocumentLoadError):
    """The file's extension names no format ragtune reads."""


class InvalidMetadataError(IngestError):
    """A `--meta key=value` pair is malformed or uses a reserved key."""


class DocumentNotFoundError(IngestError):
    """`docs rm` named a source that is not in the collection."""
