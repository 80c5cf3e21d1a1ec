"""Wire types of the chat API: OpenAI's chat completion schema plus the `ragtune` extension."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from serving.router import Route


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: bool = False


class RagtuneOptions(BaseModel):
    """ragtune's request extension (all optional)."""

    model_config = ConfigDict(extra="forbid")
    route: Route | None = None
    """Force a route instead of letting the router choose."""
    filters: dict[str, str] | None = None
    """Metadata filters for retrieval: source=PATTERN, section=PATH, or any ingested key=value."""
    collection: str | None = None
    """Search this collection instead of the default one."""


class ChatCompletionRequest(BaseModel):
    """OpenAI's chat completion request. Fields ragtune does not know are accepted, logged and
    passed on to the engine (vLLM reads its own extensions, such as top_k, from there)."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="The base model (the router decides) or an adapter's name.")
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=1, description="Only one choice per request.")
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    user: str | None = None
    ragtune: RagtuneOptions | None = None

    @field_validator("messages")
    @classmethod
    def _last_message_has_text(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("the conversation needs at least one user message with text")
        return messages

    def question(self) -> str:
        """The text the router and retrieval work on: the last user message."""
        return next(m.text() for m in reversed(self.messages) if m.role == "user" and m.text())

    def unknown_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class SourceInfo(BaseModel):
    """A passage given to the model; the answer cites it as [number]."""

    number: int
    document: str
    section: str
    chunk_id: str
    score: float


class RagtuneInfo(BaseModel):
    """How ragtune answered: the route taken, why, and the passages given to the model."""

    route: Route
    adapter: str | None = None
    adapter_version: int | None = None
    reason: str
    scores: dict[str, float] = Field(default_factory=dict)
    sources: list[SourceInfo] = Field(default_factory=list)


class ResponseMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["assistant"] = "assistant"
    content: str | None = None


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: ResponseMessage
    finish_reason: str | None = None


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    ragtune: RagtuneInfo


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


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | int | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail
