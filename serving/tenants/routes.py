"""HTTP routes of the tenants' API keys (admin scope; the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Request

from ragtune.serving.auth import require_admin
from ragtune.serving.http import error_responses
from ragtune.serving.tenants.protocol import CreatedKeyInfo, CreateKeyRequest, KeyInfo
from ragtune.serving.tenants.service import KeyStore

router = APIRouter(prefix="/admin/keys", dependencies=[Depends(require_admin)])
ERRORS = error_responses((400, 401, 403, 404, 413, 422, 429, 503))


def key_store(request: Request) -> KeyStore:
    store: KeyStore = request.app.state.keys
    return store


Keys = Annotated[KeyStore, Depends(key_store)]


@router.post("", response_model=CreatedKeyInfo, status_code=201, responses=ERRORS)
async def create_key(body: CreateKeyRequest, store: Keys) -> CreatedKeyInfo:
    """Create a tenant's API key (chat scope) that sees only the collections and adapters
    listed. The response holds the key itself, this once: only its digest is stored."""
    created = await anyio.to_thread.run_sync(
        store.create, body.collections, body.adapters, body.name
    )
    return CreatedKeyInfo(**KeyInfo.of(created.stored).model_dump(), key=created.key)


@router.get("", response_model=list[KeyInfo], responses=ERRORS)
async def list_keys(store: Keys) -> list[KeyInfo]:
    """Every stored key: id, label, collections, adapters, when it was created (never the key)."""
    return [KeyInfo.of(stored) for stored in await anyio.to_thread.run_sync(store.list)]


@router.delete("/{key_id}", status_code=204, responses=ERRORS)
async def revoke_key(key_id: str, store: Keys) -> None:
    """Revoke a key: from the next request on it admits nobody (no restart needed)."""
    await anyio.to_thread.run_sync(store.revoke, key_id)
