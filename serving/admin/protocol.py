"""Wire types of the operator endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class AddAdapterRequest(BaseModel):
    name: str
    path: str = Field(description="A PEFT LoRA directory the server can read.")
    task: str
    examples: list[str] = Field(default_factory=list)


class SwapAdapterRequest(BaseModel):
    path: str = Field(description="The new version's PEFT LoRA directory (server-side path).")


class AdapterStatus(BaseModel):
    name: str
    version: int
    served_name: str
    loaded: bool
    loaded_on: list[str] = Field(default_factory=list, description="Engines holding it.")
    in_flight: int
    task: str
    rank: int


class AdapterDetail(AdapterStatus):
    manifest: dict[str, Any] = Field(description="The version's manifest, evaluation included.")
    versions: list[int] = Field(
        default_factory=list, description="Every stored version, oldest first."
    )
