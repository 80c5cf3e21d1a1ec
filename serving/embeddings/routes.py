"""HTTP route of the embeddings API (chat scope; the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ragtune.serving.auth import require_chat
from ragtune.serving.embeddings.protocol import EmbeddingRequest, EmbeddingResponse
from ragtune.serving.embeddings.service import EmbeddingService
from ragtune.serving.http import error_responses

router = APIRouter()


def embedding_service(request: Request) -> EmbeddingService:
    service: EmbeddingService = request.app.state.components.embeddings
    return service


@router.post(
    "/v1/embeddings",
    response_model=EmbeddingResponse,
    responses=error_responses((400, 401, 403, 404, 413, 422, 429)),
    dependencies=[Depends(require_chat)],
)
async def create_embeddings(
    body: EmbeddingRequest, service: Annotated[EmbeddingService, Depends(embedding_service)]
) -> EmbeddingResponse:
    """Embed a text or a list of texts with the embedding model ragtune retrieves with (its id
    is listed by GET /v1/models), OpenAI-style: `encoding_format` "float" or "base64"
    (little-endian float32), `usage` in the model's tokens. Each text must fit the model's
    input (no silent truncation); at most RAGTUNE_EMBEDDING_MAX_INPUTS texts per request.
    """
    return await service.create(body)
