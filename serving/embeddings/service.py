"""Embeddings with the collection's embedding model (the one ragtune retrieves with), checked
and counted as OpenAI's API does. No HTTP here."""

from __future__ import annotations

import base64
import logging
import struct
import time
from collections.abc import Sequence
from typing import Any

import anyio

from ragtune.retrieval.embedder import Embedder, Vector
from ragtune.serving import observability
from ragtune.serving.embeddings.protocol import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    EmbeddingUsage,
)
from ragtune.serving.errors import EmbeddingModelNotFoundError, InvalidRequestError, shorten
from ragtune.serving.protocol import check_json_values

logger = logging.getLogger("ragtune.embeddings")
_TOKEN_IDS = (
    "input holds token ids: this server embeds text only, so send the text itself (a string or "
    "a list of strings). LangChain's OpenAIEmbeddings sends token ids unless it is built with "
    "check_embedding_ctx_length=False."
)


class EmbeddingService:
    """`POST /v1/embeddings` over the server's embedder.

    Usage:
        service = EmbeddingService(embedder, max_inputs=256)
        response = await service.create(EmbeddingRequest(input=["a", "b"], model=service.model))
    """

    def __init__(self, embedder: Embedder, *, max_inputs: int) -> None:
        self.embedder = embedder
        self.max_inputs = max_inputs
        # One embedding batch at a time: a large request gives way, between its batches, to
        # the chat requests' query embeddings instead of taking every core from them.
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def model(self) -> str:
        """The model's id as ragtune records it in each collection (GET /v1/models lists it)."""
        return self.embedder.model_id

    def accepts(self, name: str) -> bool:
        """The recorded id, or its last part (`all-MiniLM-L6-v2` for
        `sentence-transformers/all-MiniLM-L6-v2`)."""
        return name in (self.model, self.model.rsplit("/", 1)[-1])

    async def create(self, request: EmbeddingRequest) -> EmbeddingResponse:
        """Check the request (InvalidRequestError, EmbeddingModelNotFoundError), then embed
        its texts off the event loop, in batches, in the order given."""
        texts = self.texts(request)
        # Tokenizing a full request takes a while too: off the event loop as well.
        lengths = await anyio.to_thread.run_sync(
            self.embedder.count_tokens, texts, limiter=self._limiter
        )
        for index, tokens in enumerate(lengths):
            if tokens > self.embedder.max_tokens:
                raise InvalidRequestError(
                    f"input[{index}] has {tokens} tokens: {self.model} reads at most "
                    f"{self.embedder.max_tokens} (special tokens included); split it into "
                    "shorter texts",
                    param="input",
                )
        started = time.perf_counter()
        vectors = await self._embed(texts, lengths)
        record = observability.current()
        if record is not None:
            record.time("embedding", time.perf_counter() - started)
            record.prompt_tokens = sum(lengths)
        encode = _base64 if request.encoding_format == "base64" else _floats
        return EmbeddingResponse(
            data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(vectors)],
            model=request.model,
            usage=EmbeddingUsage(prompt_tokens=sum(lengths), total_tokens=sum(lengths)),
        )

    def texts(self, request: EmbeddingRequest) -> list[str]:
        """The texts to embed, once checked: the model's name, the dimensions, no token ids,
        no empty text, no more than `max_inputs` of them, valid Unicode."""
        if not self.accepts(request.model):
            raise EmbeddingModelNotFoundError(
                f"no embedding model named {shorten(request.model)!r}: this server embeds with "
                f"{self.model!r}",
                model=request.model,
            )
        if request.dimensions is not None and request.dimensions != self.embedder.dimension:
            raise InvalidRequestError(
                f"dimensions {request.dimensions}: {self.model} gives vectors of "
                f"{self.embedder.dimension} dimensions and does not shorten them; send "
                f"{self.embedder.dimension} or leave dimensions out",
                param="dimensions",
            )
        given: Sequence[Any] = [request.input] if isinstance(request.input, str) else request.input
        if not given:
            raise InvalidRequestError(
                "input is an empty list: send a text or a list of texts", param="input"
            )
        if not all(isinstance(item, str) for item in given):
            raise InvalidRequestError(_TOKEN_IDS, param="input")
        texts: list[str] = list(given)
        if len(texts) > self.max_inputs:
            raise InvalidRequestError(
                f"input has {len(texts)} texts: at most {self.max_inputs} per request "
                "(RAGTUNE_EMBEDDING_MAX_INPUTS); send them in several requests",
                param="input",
            )
        for index, text in enumerate(texts):
            if not text.strip():
                raise InvalidRequestError(
                    f"input[{index}] is empty: every input must have text", param="input"
                )
        check_json_values(texts, "input")
        return texts

    async def _embed(self, texts: list[str], lengths: list[int]) -> list[Vector]:
        # Batches of similar lengths (less padding), each in a worker thread.
        order = sorted(range(len(texts)), key=lambda i: lengths[i])
        size = max(1, self.embedder.batch_size)
        vectors: list[Vector] = [[] for _ in texts]
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            embedded = await anyio.to_thread.run_sync(
                self.embedder.embed, [texts[i] for i in batch], limiter=self._limiter
            )
            for i, vector in zip(batch, embedded, strict=True):
                vectors[i] = vector
        return vectors


def _floats(vector: Vector) -> list[float]:
    return vector


def _base64(vector: Vector) -> str:
    """Little-endian float32 bytes, base64-encoded: what OpenAI sends and its clients decode."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
