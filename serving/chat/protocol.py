"""Wire types of the chat API: OpenAI's chat completion schema plus the `ragtune` extension."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ragtune.adapters.examples import last_user_text
from ragtune.serving.errors import InvalidRequestError, shorten
from ragtune.serving.router import Route

# Fields of the request forwarded to the engine as the client sent them: OpenAI's sampling
# controls and vLLM's sampling extensions, which shape the answer and reveal nothing of the
# prompt. Every other field the client sends is logged and dropped (or refused, below).
ENGINE_FIELDS = frozenset(
    {
        "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty",
        "user", "logit_bias", "logprobs", "top_logprobs",
        # vLLM's sampling extensions
        "top_k", "min_p", "repetition_penalty", "length_penalty", "min_tokens", "ignore_eos",
        "stop_token_ids", "include_stop_str_in_output", "skip_special_tokens",
        "spaces_between_special_tokens", "bad_words",
    }
)  # fmt: skip
# Engine controls a client may not use through ragtune: they would return the prompt (the
# system prompt and the retrieved context) or its token ids, set the engine's request id, cut
# or rebuild the prompt ragtune made (its instructions included), or reach engine internals.
REFUSED_FIELDS = frozenset(
    {
        "echo", "return_prompt_text", "return_token_ids", "prompt_logprobs",
        "return_tokens_as_token_ids", "request_id", "truncate_prompt_tokens", "chat_template",
        "chat_template_kwargs", "add_generation_prompt", "continue_final_message",
        "add_special_tokens", "documents", "mm_processor_kwargs", "priority", "cache_salt",
        "kv_transfer_params", "vllm_xargs", "logits_processors", "prompt_embeds",
    }
)  # fmt: skip
MAX_FILTERS = 32
_FILTER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
_SURROGATE = re.compile("[\ud800-\udfff]")
MaxTokens = Annotated[int, Field(strict=True, ge=1)]


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

    def check_filters(self) -> None:
        """Filters name metadata, nothing else: no store operators (`$or`), no `=`, a bounded
        number. InvalidRequestError otherwise."""
        filters = self.filters or {}
        if len(filters) > MAX_FILTERS:
            raise InvalidRequestError(
                f"{len(filters)} filters: at most {MAX_FILTERS} per request",
                param="ragtune.filters",
            )
        for key in filters:
            if not _FILTER_KEY.match(key):
                raise InvalidRequestError(
                    f"filter key {shorten(key)!r} is not a metadata name: use source, section "
                    "or a key given at ingest (letters, digits, '_', '.', '-'; no operators)",
                    param="ragtune.filters",
                )


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
    max_tokens: MaxTokens | None = None
    max_completion_tokens: MaxTokens | None = None
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
        return last_user_text((m.role, m.text()) for m in self.messages)

    def conversation(self) -> list[dict[str, Any]]:
        """The messages as the model's chat template reads them: each one's text as one
        string, and every message with text (an assistant turn that only called tools has
        none, and templates expect some)."""
        messages = [m.model_dump(exclude_none=True) for m in self.messages]
        for message in messages:
            if isinstance(message.get("content"), list):
                message["content"] = "\n".join(
                    part.get("text") or "" for part in message["content"]
                )
            message.setdefault("content", "")
        return messages

    def unknown_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def answer_bound(self) -> int | None:
        """The most tokens the client lets the answer take: `max_completion_tokens` (OpenAI's
        current name) or `max_tokens` (its older one). Both with different values is an error:
        the engine would honour one and a limit checked on the other would not hold."""
        given = {v for v in (self.max_tokens, self.max_completion_tokens) if v is not None}
        if len(given) > 1:
            raise InvalidRequestError(
                f"max_tokens ({self.max_tokens}) and max_completion_tokens "
                f"({self.max_completion_tokens}) differ: set one of them",
                param="max_completion_tokens",
            )
        return given.pop() if given else None

    def check_values(self) -> None:
        """What the schema lets through but no engine or store can take: unpaired UTF-16
        surrogates in any text (they cannot be encoded), NaN or Infinity in any number,
        filters that are not metadata names. InvalidRequestError naming the field."""
        check_json_values(self.model_dump(exclude_none=True))
        if self.ragtune is not None:
            self.ragtune.check_filters()


def check_json_values(value: Any, path: str = "") -> None:
    if isinstance(value, str):
        if _SURROGATE.search(value):
            raise InvalidRequestError(
                f"{path or 'the request'} holds an unpaired UTF-16 surrogate (an invalid "
                "character); send valid Unicode text",
                param=path or None,
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidRequestError(
                f"{path or 'the request'} is {value}: numbers must be finite", param=path or None
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            check_json_values(key, path)
            check_json_values(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            check_json_values(item, f"{path}.{index}" if path else str(index))


class SourceInfo(BaseModel):
    """A passage given to the model; the answer cites it as [number]."""

    number: int
    document: str
    """The document's path below the folder it was ingested from (or its file name)."""
    document_id: str
    """A stable id of the document (the same for every chunk of it, across re-ingests)."""
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
