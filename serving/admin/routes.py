"""HTTP routes of the operator endpoints (admin scope; the logic is in service.py)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from serving.admin.protocol import (
    AdapterDetail,
    AdapterStatus,
    AddAdapterRequest,
    SwapAdapterRequest,
)
from serving.admin.service import AdapterAdmin
from serving.auth import require_admin
from serving.chat.routes import ERRORS

router = APIRouter(prefix="/admin/adapters", dependencies=[Depends(require_admin)])


def admin(request: Request) -> AdapterAdmin:
    return AdapterAdmin(request.app.state.serving)


Admin = Annotated[AdapterAdmin, Depends(admin)]


@router.get("", response_model=list[AdapterStatus], responses=ERRORS)
async def list_adapters(service: Admin) -> list[AdapterStatus]:
    """Registered adapters: version in force, engine name, loaded or not, requests in flight."""
    return [service.status(m) for m in service.state.adapters.values()]


@router.post("", response_model=AdapterStatus, responses=ERRORS)
async def add_adapter(body: AddAdapterRequest, service: Admin) -> AdapterStatus:
    """Validate a PEFT LoRA directory (a server-side path), register it and load it."""
    return await service.add(body.name, body.path, body.task, body.examples)


@router.get("/{name}", response_model=AdapterDetail, responses=ERRORS)
async def show_adapter(name: str, service: Admin) -> AdapterDetail:
    """One adapter's status and manifest."""
    manifest = service.state.adapter(name)
    status = service.status(manifest)
    return AdapterDetail(**status.model_dump(), manifest=manifest.model_dump(mode="json"))


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
    """Unload the adapter from the engine (it stays registered)."""
    return await service.unload(name)


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def remove_adapter(name: str, service: Admin) -> None:
    """Unload and delete the adapter, every version."""
    await service.remove(name)
