"""Wire types of `GET /v1/models` (OpenAI's model list, plus vLLM's `parent`, `root` and
`max_model_len`, and an adapter's task)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "ragtune"
    parent: str | None = None
    root: str | None = None
    max_model_len: int | None = None
    task: str | None = Field(default=None, description="An adapter's task description.")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
