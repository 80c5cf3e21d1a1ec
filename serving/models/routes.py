"""HTTP route of the model list (chat scope; the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from ragtune.serving.auth import principal, require_chat
from ragtune.serving.models.protocol import ModelList
from ragtune.serving.models.service import ModelCatalog

router = APIRouter()


def model_catalog(request: Request) -> ModelCatalog:
    catalog: ModelCatalog = request.app.state.components.models
    return catalog


@router.get("/v1/models", response_model=ModelList, dependencies=[Depends(require_chat)])
async def list_models(
    request: Request, catalog: Annotated[ModelCatalog, Depends(model_catalog)]
) -> ModelList:
    """The base model (the router chooses the route for it), every registered adapter this
    API key may use, and the embedding model."""
    return catalog.list(principal(request))
