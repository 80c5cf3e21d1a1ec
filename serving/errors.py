"""Errors of the serving side, each with a message a user can act on."""

from __future__ import annotations


def shorten(text: str, limit: int = 64) -> str:
    """A client-given string as a message may echo it: at most `limit` characters."""
    return text if len(text) <= limit else text[:limit] + "..."


class ServingError(Exception):
    """Base of serving errors; `str(error)` is meant for the user."""


class ModelPrepareError(ServingError):
    """The base model cannot be prepared (package missing, GGUF unreadable, disk full)."""


class EngineError(ServingError):
    """The engine failed in a way the request cannot fix (a 5xx, a broken stream)."""


class EngineStartError(EngineError):
    """The engine process did not become ready."""


class EngineNotRunningError(EngineError):
    """Nothing answers at the engine's URL."""


class EngineTimeoutError(EngineError):
    """The engine took longer than the configured timeout."""


class GenerationTimeoutError(EngineTimeoutError):
    """A generation ran past RAGTUNE_REQUEST_TIMEOUT_S and was stopped, the engine not being
    saturated: the answer asked for takes longer than the limit (504, not retried)."""

    def __init__(
        self, message: str, *, limit_s: float, max_tokens: int | None, tokens: int | None
    ) -> None:
        super().__init__(message)
        self.limit_s = limit_s
        self.max_tokens = max_tokens
        self.tokens = tokens
        """Tokens generated when it was stopped (about: chunks streamed); None: not known."""


class EngineSaturatedError(EngineTimeoutError):
    """A request reached RAGTUNE_REQUEST_TIMEOUT_S while the engine had requests waiting for
    room: more work than it can run (503, retried later)."""

    def __init__(self, message: str, *, waiting: int) -> None:
        super().__init__(message)
        self.waiting = waiting


class EngineModelMissingError(EngineError):
    """The engine does not serve a model ragtune sent it: it restarted and lost an adapter
    ragtune had loaded (the engine pool loads it again and retries once), or its served name is
    not the one configured. ragtune's state, never the client's error: a client naming an
    unknown model gets `ModelNotFoundError` before any engine call."""

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class EngineRequestError(ServingError):
    """The engine refused a request as invalid (a 4xx other than the cases below)."""

    def __init__(self, message: str, status_code: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.param = param
        """The request field the engine complained about, when it said."""


class ModelNotFoundError(ServingError):
    """The client named a model that is neither the base model nor a registered adapter (404)."""

    def __init__(self, message: str, model: str | None = None) -> None:
        super().__init__(message)
        self.model = model


class EmbeddingModelNotFoundError(ModelNotFoundError):
    """The client named an embedding model other than the one this server embeds with (404);
    the message names the right one."""


class ContextLengthError(EngineRequestError):
    """The prompt plus the requested completion do not fit the model's context."""

    def __init__(
        self, message: str, limit: int | None = None, requested: int | None = None
    ) -> None:
        super().__init__(message, 400)
        self.limit = limit
        self.requested = requested


class AdapterLoadError(EngineRequestError):
    """The engine refused to load or unload an adapter."""


class AdapterSlotsBusyError(ServingError):
    """Every LoRA slot of the engine holds an adapter that is answering requests (503)."""


class InvalidRequestError(ServingError):
    """A request field has a value this server does not accept (400, `param` names it)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class RouteRequestError(ServingError):
    """The request asked for a route that cannot be taken."""


class AuthError(ServingError):
    """No API key, or one that is not valid (401)."""


class ForbiddenError(ServingError):
    """A valid key without the scope the endpoint needs (403)."""


class KeyNotFoundError(ServingError):
    """No stored API key has the id given (`ragtune keys revoke`, DELETE /admin/keys/{id}; 404)."""


class KeyStoreError(ServingError):
    """The stored API keys cannot be read or written (a damaged or unwritable file). The message
    names the file, for operators; clients are told only that keys cannot be checked (503)."""


class RateLimitedError(ServingError):
    """The API key sent more requests than its rate limit allows (429)."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class RequestTooLargeError(ServingError):
    """The request body is over the size limit (413)."""


class UploadedFileNotFoundError(ServingError):
    """No uploaded file of this id that the caller may see (404: another tenant's file answers
    exactly as a missing one)."""


class VectorStoreNotFoundError(ServingError):
    """No vector store of this id that the caller may see (404, as for a missing one)."""


class FileBatchNotFoundError(ServingError):
    """No file batch of this id in the vector store that the caller may see (404)."""


class QuotaExceededError(ServingError):
    """The tenant keeps as many files, or bytes, as its quota allows (403)."""


class RouteCasesError(ServingError):
    """A route evaluation's case file is missing or malformed (the message names the line)."""


class RouteModelError(ServingError):
    """A learned router file cannot be used (missing, damaged, or made for another feature
    schema or embedding model): the server falls back to the thresholds and says why."""


class GroundingModelError(ServingError):
    """The configured grounding model (RAGTUNE_GROUNDING_MODEL) cannot be found, is not an NLI
    cross-encoder, or does not load."""
