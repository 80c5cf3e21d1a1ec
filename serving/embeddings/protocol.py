"""Wire types of the embeddings API: OpenAI's `POST /v1/embeddings` request and response."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EmbeddingRequest(BaseModel):
    """OpenAI's embeddings request. Token-id arrays are part of OpenAI's schema, so they are
    read here and refused by the service with a message that says what to send instead."""

    model_config = ConfigDict(extra="allow")
    input: str | list[str] | list[int] | list[list[int]] = Field(
        description="A text, or a list of texts, to embed (not empty). Token-id arrays are "
        "not accepted: send the text."
    )
    model: str = Field(description="The embedding model's id, as GET /v1/models lists it.")
    encoding_format: Literal["float", "base64"] = Field(
        default="float",
        description="float: lists of numbers; base64: each vector's little-endian float32 "
        "bytes, base64-encoded (what the official openai client asks for by default).",
    )
    dimensions: int | None = Field(
        default=None, description="Only the model's own dimension is accepted (no shortening)."
    )
    user: str | None = None


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str
    """The vector, or its base64 form (`encoding_format: "base64"`)."""


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    """Tokens the embedding model read, its special tokens included."""
    total_tokens: int


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage
