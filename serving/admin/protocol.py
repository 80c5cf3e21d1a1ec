"""Wire types of the operator endpoints."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ragtune.adapters.provenance import DocumentChange


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
    training_collection: str | None = Field(
        default=None, description="The collection it was trained alongside, if recorded."
    )
    stale: bool | None = Field(
        default=False,
        description="Documents of that collection changed, were removed or added since it was "
        "trained (the router then adds the fresh passages to its answers); null when the "
        "collection cannot be read now.",
    )
    changed_documents: int = Field(
        default=0, description="How many documents changed, were removed or added since."
    )


class AdapterDetail(AdapterStatus):
    manifest: dict[str, Any] = Field(description="The version's manifest, evaluation included.")
    versions: list[int] = Field(
        default_factory=list, description="Every stored version, oldest first."
    )
    changes: list[DocumentChange] = Field(
        default_factory=list,
        description="The documents that differ from those it was trained alongside, and since "
        "when the version now stored was ingested.",
    )
