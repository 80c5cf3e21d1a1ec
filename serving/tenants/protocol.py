"""Wire types of the key endpoints (`/admin/keys`)."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ragtune.serving.tenants.service import StoredKey


class CreateKeyRequest(BaseModel):
    collections: list[str] = Field(
        description="The collections the key may search (at least one); the first is searched "
        "when a request names none. They need not exist yet."
    )
    adapters: list[str] = Field(
        default_factory=list,
        description="The adapters the key may use as `model` or the router may choose for it; "
        "none: the base model only.",
    )
    name: str = Field(default="", description="A label for operators (who the key is for).")


class KeyInfo(BaseModel):
    id: str = Field(description="The key's id, also its tenant's; not secret.")
    name: str
    collections: list[str]
    adapters: list[str]
    created: str

    @classmethod
    def of(cls, stored: StoredKey) -> KeyInfo:
        return cls(
            id=stored.id,
            name=stored.name,
            collections=list(stored.collections),
            adapters=list(stored.adapters),
            created=stored.created,
        )


class CreatedKeyInfo(KeyInfo):
    key: str = Field(description="The API key itself: shown this once (only its digest is stored).")
