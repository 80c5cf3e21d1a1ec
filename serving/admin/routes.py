"""HTTP routes of the operator endpoints (admin scope; the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Path, Request

from ragtune.serving.admin.protocol import (
    AdapterDetail,
    AdapterStatus,
    AddAdapterRequest,
    SwapAdapterRequest,
)
from ragtune.serving.admin.service import AdapterAdmin
from ragtune.serving.auth import require_admin
from ragtune.serving.http import error_responses

router = APIRouter(prefix="/admin/adapters", dependencies=[Depends(require_admin)])
# 409: the name is taken, the version is in force, or the adapter is answering requests.
ERRORS = error_responses((400, 401, 403, 404, 409, 413, 422, 429, 503))


def admin(request: Request) -> AdapterAdmin:
    service: AdapterAdmin = request.app.state.components.admin
    return service


Admin = Annotated[AdapterAdmin, Depends(admin)]


@router.get("", response_model=list[AdapterStatus], responses=ERRORS)
async def list_adapters(service: Admin) -> list[AdapterStatus]:
    """Registered adapters: version in force, engine name, loaded or not, requests in flight,
    and whether the documents each was trained alongside changed since (`stale`)."""
    return await anyio.to_thread.run_sync(service.listed)


@router.post("", response_model=AdapterStatus, responses=ERRORS)
async def add_adapter(body: AddAdapterRequest, service: Admin) -> AdapterStatus:
    """Validate a PEFT LoRA directory (a server-side path), register it and load it."""
    return await service.add(body.name, body.path, body.task, body.examples)


@router.get("/{name}", response_model=AdapterDetail, responses=ERRORS)
async def show_adapter(name: str, service: Admin) -> AdapterDetail:
    """One adapter's status, manifest and stored versions, and the documents changed since it
    was trained (`changes`: changed, removed or added, each with when its version now stored
    was ingested)."""
    return await anyio.to_thread.run_sync(service.detail, name)


@router.post("/{name}/swap", response_model=AdapterStatus, responses=ERRORS)
async def swap_adapter(name: str, body: SwapAdapterRequest, service: Admin) -> AdapterStatus:
    """Hot-swap: a new version of the adapter replaces the old without a dropped request."""
    return await service.swap(name, body.path)


@router.post("/{name}/load", response_model=AdapterStatus, responses=ERRORS)
async def load_adapter(name: str, service: Admin) -> AdapterStatus:
    """Load the adapter's current version into the engine."""
    return await service.load(name)


@router.post("/{name}/unload", response_model=AdapterStatus, responses=ERRORS)
async def unload_adapter(name: str, service: Admin) -> AdapterStatus:
    """Unload the adapter from the engine (it stays registered). 409 while it is answering
    requests."""
    return await service.unload(name)


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def remove_adapter(name: str, service: Admin) -> None:
    """Unload and delete the adapter, every version. 409 while it is answering requests."""
    await service.remove(name)


@router.delete("/{name}/versions/{version}", status_code=204, responses=ERRORS)
async def remove_adapter_version(
    name: str, version: Annotated[int, Path(ge=1)], service: Admin
) -> None:
    """Delete one old version of the adapter (e.g. kept after a hot-swap). The version in
    force cannot be deleted (409): publish a newer one first, or delete the adapter."""
    await service.remove_version(name, version)
