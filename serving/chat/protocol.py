"""Wire types of the chat API: OpenAI's chat completion schema plus the `ragtune` extension."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from ragtune.adapters.examples import last_user_text
from ragtune.retrieval.conversation import user_turns as user_texts
from ragtune.retrieval.errors import InvalidFilterError
from ragtune.retrieval.filters import SearchFilter
from ragtune.serving.errors import InvalidRequestError, shorten
from ragtune.serving.grounding import GroundingInfo
from ragtune.serving.protocol import check_json_values
from ragtune.serving.router import Route
from ragtune.serving.vector_stores.protocol import RankingOptions, metadata_filters

# Fields of the request forwarded to the engine as the client sent them: OpenAI's sampling
# controls and vLLM's sampling extensions, which shape the answer and reveal nothing of the
# prompt. Every other field the client sends is logged and dropped (or refused, below). Tools,
# tool_choice, parallel_tool_calls and response_format go to the engine too, but checked and
# rebuilt from their known fields (`ChatCompletionRequest.check_content`, `engine_tools`).
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
MAX_COLLECTIONS = 8
"""Most collections (vector stores) one request searches together."""
_FILTER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
MaxTokens = Annotated[int, Field(strict=True, ge=1)]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class FunctionCall(BaseModel):
    """A call the assistant made: the function's name and its arguments as a JSON string."""

    model_config = ConfigDict(extra="ignore")
    name: str
    arguments: str


class ToolCall(BaseModel):
    """One of an assistant message's `tool_calls`, as the client sends it back."""

    model_config = ConfigDict(extra="ignore")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    """The calls an assistant turn made (the client sends them back with their results)."""
    tool_call_id: str | None = None
    """On a `tool` message: the call whose result it carries."""

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(part.text or "" for part in self.content if part.type == "text")
        return self.content or ""

    def check(self, index: int, model: str) -> None:
        """What the model cannot read or the template cannot place: a part that is not text
        (an image, audio, a file), a tool result without the call it answers, tool calls on a
        turn other than the assistant's. InvalidRequestError naming the message (and part)."""
        where = f"messages[{index}]"
        for number, part in enumerate(self.content if isinstance(self.content, list) else []):
            if part.type != "text":
                raise InvalidRequestError(
                    f"{where}.content[{number}] is an {shorten(part.type, 32)!r} part: the model "
                    f"{shorten(model)!r} reads text only; send the content as text parts",
                    param=f"{where}.content[{number}]",
                )
        if self.role == "tool" and not self.tool_call_id:
            raise InvalidRequestError(
                f"{where} is a tool result without tool_call_id: set it to the id of the "
                "assistant's tool call it answers",
                param=f"{where}.tool_call_id",
            )
        if self.tool_calls and self.role != "assistant":
            raise InvalidRequestError(
                f"{where} has tool_calls but is a {self.role} message: only assistant messages "
                "call tools",
                param=f"{where}.tool_calls",
            )
        for number, call in enumerate(self.tool_calls or []):
            check_tool_name(call.function.name, f"{where}.tool_calls[{number}].function.name")

    def for_template(self) -> dict[str, Any]:
        """The message as the chat template reads it: its text as one string (templates expect
        some, even on an assistant turn that only called tools), and only the fields a
        template knows (nothing else a client adds reaches the engine)."""
        message: dict[str, Any] = {"role": self.role, "content": self.text()}
        if self.name is not None:
            message["name"] = self.name
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        return message


TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_NAME_RULE = "1 to 64 letters, digits, '_' or '-'"
MAX_TOOLS = 128


def check_tool_name(name: str, param: str) -> None:
    if not TOOL_NAME.match(name):
        raise InvalidRequestError(
            f"{param} {shorten(name, 80)!r} is not a function name: use {TOOL_NAME_RULE}",
            param=param,
        )


class FunctionDefinition(BaseModel):
    """A function the model may call: its name, what it does, its parameters (a JSON Schema
    of an object)."""

    model_config = ConfigDict(extra="ignore")
    name: str
    description: str | None = None
    parameters: Any = None
    strict: bool | None = None


@dataclass(frozen=True)
class SearchScope:
    """What a `file_search` tool narrows its search to, besides its stores."""

    filters: dict[str, str] | None = None
    """Metadata filters, as `ragtune.filters` (None: none)."""
    max_results: int | None = None
    """At most this many passages (`max_num_results`; None: the server's RAGTUNE_RAG_TOP_K)."""
    min_score: float = 0.0
    """Passages less similar to the question are not given (`score_threshold`: the score
    `file_search_call.results` and the vector store search show), besides the evidence
    threshold."""


class ToolSpec(BaseModel):
    """One of the request's `tools` (OpenAI's function tool). `check` before use: the types
    here are loose so that a wrong value is a 400 naming it, not a schema error."""

    model_config = ConfigDict(extra="ignore")
    type: str
    function: FunctionDefinition | None = None
    vector_store_ids: list[str] | None = None
    """Of a `file_search` tool: the vector stores to search (`file_search_as_collection`)."""
    filters: Any = None
    """Of a `file_search` tool: OpenAI's attribute filters, read as the vector store search
    reads them (`search_scope`)."""
    max_num_results: Any = None
    """Of a `file_search` tool: at most this many passages (1-50)."""
    ranking_options: Any = None
    """Of a `file_search` tool: `score_threshold`, as the vector store search reads it; `ranker`
    is ignored, as by the vector store search."""

    def search_scope(self, param: str) -> SearchScope:
        """Of a `file_search` tool: what it narrows the search to, once it names its stores and
        asks nothing ragtune does not serve. InvalidRequestError naming the field (`param`: the
        tool, e.g. `tools[0]`) otherwise: what a search cannot honour is refused, never
        searched without."""
        if any(not name.strip() for name in self.vector_store_ids or ()):
            raise InvalidRequestError(
                f"{param}.vector_store_ids names an empty vector store id: give each store's id",
                param=f"{param}.vector_store_ids",
            )
        limit = self.max_num_results
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50
        ):
            raise InvalidRequestError(
                f"{param}.max_num_results must be a whole number from 1 to 50",
                param=f"{param}.max_num_results",
            )
        threshold = 0.0
        if self.ranking_options is not None:
            threshold = self._score_threshold(f"{param}.ranking_options")
        if self.filters is None:
            return SearchScope(None, limit, threshold)
        try:  # the vector store search's own reading of them: the same filters, the same 400s
            found = metadata_filters(self.filters)
            RagtuneOptions(filters=found).check_filters()
        except (ValueError, InvalidRequestError) as exc:
            raise InvalidRequestError(str(exc), param=f"{param}.filters") from None
        return SearchScope(found, limit, threshold)

    def _score_threshold(self, param: str) -> float:
        try:  # the vector store search's own bounds
            ranking = RankingOptions.model_validate(self.ranking_options)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join([param, *(str(part) for part in first["loc"])])
            message = first["msg"].removeprefix("Value error, ")
            raise InvalidRequestError(f"{where}: {message}", param=where) from None
        return ranking.score_threshold or 0.0

    def check(self, param: str) -> FunctionDefinition:
        """The function, once it is one a chat template and the engine can take:
        InvalidRequestError naming `param` (e.g. `tools[0]`) otherwise."""
        if self.type != "function":
            raise InvalidRequestError(
                f"{param}.type is {shorten(self.type, 32)!r}: only function tools are "
                'supported ({"type": "function", "function": {...}})',
                param=f"{param}.type",
            )
        if self.function is None:
            raise InvalidRequestError(
                f"{param}.function is missing: give the function's name, description and "
                "parameters",
                param=f"{param}.function",
            )
        check_tool_name(self.function.name, f"{param}.function.name")
        parameters = self.function.parameters
        if parameters is not None and (
            not isinstance(parameters, dict) or parameters.get("type", "object") != "object"
        ):
            raise InvalidRequestError(
                f"{param}.function.parameters must be a JSON Schema of an object "
                '({"type": "object", "properties": {...}})',
                param=f"{param}.function.parameters",
            )
        return self.function

    def for_engine(self) -> dict[str, Any]:
        """The checked tool as the engine (and the chat template) receives it."""
        assert self.function is not None, "check() first"
        return {"type": "function", "function": self.function.model_dump(exclude_none=True)}


class NamedFunction(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class NamedToolChoice(BaseModel):
    """`tool_choice` naming the one function the model must call."""

    model_config = ConfigDict(extra="ignore")
    type: str = "function"
    function: NamedFunction


class FileSearchChoice(BaseModel):
    """`tool_choice` `{"type": "file_search"}`: the search of the request's `file_search` tool,
    which runs whatever the choice (`ChatCompletionRequest.file_search_as_collection`)."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["file_search"]


TOOL_CHOICES = ("none", "auto", "required")


def check_tools(
    tools: list[ToolSpec] | None,
    tool_choice: str | NamedToolChoice | FileSearchChoice | None,
    *,
    auto_tool_choice: bool,
    param: str = "tools",
) -> None:
    """The tools a request offers and how the model must use them, as the engine can honour
    them: each a function tool with a valid name and an object schema, at most MAX_TOOLS, a
    named choice among them, and "auto" (also meant by tools without `tool_choice`) only where
    the engine parses the model's own tool calls (`auto_tool_choice`, RAGTUNE_TOOL_CALL_PARSER).
    InvalidRequestError naming the field otherwise."""
    if tools is not None:
        if len(tools) > MAX_TOOLS:
            raise InvalidRequestError(
                f"{len(tools)} tools: at most {MAX_TOOLS} per request", param=param
            )
        names = [tool.check(f"{param}[{n}]").name for n, tool in enumerate(tools)]
        duplicate = next((name for name in names if names.count(name) > 1), None)
        if duplicate is not None:
            raise InvalidRequestError(
                f"two tools are named {duplicate!r}: give each function its own name",
                param=param,
            )
    offered = [tool.function.name for tool in tools or [] if tool.function is not None]
    if isinstance(tool_choice, FileSearchChoice):
        raise InvalidRequestError(
            "tool_choice is file_search, but the request has no file_search tool: add "
            '{"type": "file_search", "vector_store_ids": [...]} to tools, or remove tool_choice',
            param="tool_choice",
        )
    if isinstance(tool_choice, NamedToolChoice):
        if tool_choice.type != "function":
            raise InvalidRequestError(
                f"tool_choice.type is {shorten(tool_choice.type, 32)!r}: name a function as "
                '{"type": "function", "function": {"name": ...}}',
                param="tool_choice.type",
            )
        if tool_choice.function.name not in offered:
            raise InvalidRequestError(
                f"tool_choice names the function {shorten(tool_choice.function.name)!r}, which "
                f"is not among the request's tools ({', '.join(offered) or 'none'})",
                param="tool_choice.function.name",
            )
        return
    if tool_choice is not None and tool_choice not in TOOL_CHOICES:
        raise InvalidRequestError(
            f"tool_choice is {shorten(tool_choice, 32)!r}: use none, auto, required or "
            '{"type": "function", "function": {"name": ...}}',
            param="tool_choice",
        )
    if tool_choice in ("auto", "required") and not offered:
        raise InvalidRequestError(
            f"tool_choice is {tool_choice!r} but the request has no tools: add them or "
            "remove tool_choice",
            param="tool_choice",
        )
    if offered and tool_choice in (None, "auto") and not auto_tool_choice:
        said = "is auto" if tool_choice else "is not set (which means auto)"
        raise InvalidRequestError(
            f"tool_choice {said}, but this server does not let the model choose whether to "
            "call a tool: its engine was started without a tool-call parser. Use tool_choice "
            '"required" or {"type": "function", "function": {"name": ...}} (the engine then '
            'constrains the answer to a call), or "none"; operators: set '
            "RAGTUNE_TOOL_CALL_PARSER (xlam for the default SmolLM2 model)",
            param="tool_choice",
        )


class JsonSchemaFormat(BaseModel):
    """`response_format.json_schema`: the schema the answer must follow, and its name."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)
    name: str | None = None
    description: str | None = None
    schema_: Any = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    """`response_format`: free text, any JSON object, or JSON following a schema (the engine
    constrains its decoding to it)."""

    model_config = ConfigDict(extra="ignore")
    type: str
    json_schema: JsonSchemaFormat | None = None

    def check(self, param: str = "response_format") -> None:
        """InvalidRequestError naming the field unless the engine can constrain to it."""
        if self.type not in ("text", "json_object", "json_schema"):
            raise InvalidRequestError(
                f"{param}.type is {shorten(self.type, 32)!r}: use text, json_object or json_schema",
                param=f"{param}.type",
            )
        if self.type != "json_schema":
            return
        spec = self.json_schema
        if spec is None:
            raise InvalidRequestError(
                f'{param}.json_schema is missing: give {{"name": ..., "schema": {{...}}}}',
                param=f"{param}.json_schema",
            )
        if spec.name is None:
            raise InvalidRequestError(
                f"{param}.json_schema.name is missing: name the schema ({TOOL_NAME_RULE})",
                param=f"{param}.json_schema.name",
            )
        check_tool_name(spec.name, f"{param}.json_schema.name")
        if not isinstance(spec.schema_, dict):
            said = "missing" if spec.schema_ is None else "not a JSON object"
            raise InvalidRequestError(
                f"{param}.json_schema.schema is {said}: give a JSON Schema "
                '(e.g. {"type": "object", "properties": {...}})',
                param=f"{param}.json_schema.schema",
            )

    def for_engine(self) -> dict[str, Any]:
        """The checked format as the engine receives it (known fields only)."""
        if self.type != "json_schema" or self.json_schema is None:
            return {"type": self.type}
        spec = self.json_schema.model_dump(by_alias=True, exclude_none=True)
        return {"type": "json_schema", "json_schema": spec}


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
    collections: list[str] | None = None
    """Search these collections together (a `file_search` over several vector stores): each
    is searched as `collection` would be, and their best passages are merged
    (`serving.retrievers.merge_ranked`). Not with `collection`."""

    def searched(self) -> tuple[str, ...]:
        """The collections the request names, in its order, each once (none: the default).
        InvalidRequestError when it names them twice over or too many, or names an empty one
        (which is no name for the default collection: that is leaving the field out)."""
        if self.collection is not None and self.collections is not None:
            raise InvalidRequestError(
                "ragtune.collection and ragtune.collections are both set: give the "
                "collections in one of them",
                param="ragtune.collections",
            )
        if self.collection is not None and not self.collection.strip():
            raise InvalidRequestError(
                "ragtune.collection is empty: name a collection, or leave the field out to "
                "search the server's default one",
                param="ragtune.collection",
            )
        if any(not name.strip() for name in self.collections or ()):
            raise InvalidRequestError(
                "ragtune.collections names an empty collection: give each collection's name",
                param="ragtune.collections",
            )
        if self.collections is None:
            return () if self.collection is None else (self.collection,)
        names = tuple(dict.fromkeys(self.collections))
        if not names or len(names) > MAX_COLLECTIONS:
            raise InvalidRequestError(
                f"ragtune.collections names {len(names)} collections: give 1 to {MAX_COLLECTIONS}",
                param="ragtune.collections",
            )
        return names

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
            if not _FILTER_KEY.fullmatch(key):  # `$` would let "source\n" through
                raise InvalidRequestError(
                    f"filter key {shorten(key)!r} is not a metadata name: use source, section "
                    "or a key given at ingest (letters, digits, '_', '.', '-'; no operators)",
                    param="ragtune.filters",
                )
        try:  # what search will read them as, checked now: not only when a search runs
            SearchFilter.from_mapping(filters)
        except InvalidFilterError as exc:
            raise InvalidRequestError(str(exc), param="ragtune.filters") from None


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
    tools: list[ToolSpec] | None = None
    tool_choice: str | NamedToolChoice | FileSearchChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    ragtune: RagtuneOptions | None = None
    _search_scope: SearchScope = PrivateAttr(default_factory=SearchScope)

    @model_validator(mode="after")
    def file_search_as_collection(self) -> Self:
        """A `file_search` tool (`{"type": "file_search", "vector_store_ids": [ID, ...]}`) is no
        tool the model sees: it asks for the RAG route over those vector stores' collections, as
        `ragtune: {"collections": [ID, ...], "route": "rag"}` would (one id: `collection`), its
        `filters` as `ragtune.filters`, its `max_num_results` and `score_threshold` as
        `search_scope`. The search always runs, so a `tool_choice` of "auto",
        "required" or `{"type": "file_search"}` with no other tool asks for nothing more."""
        searches = [
            (n, tool) for n, tool in enumerate(self.tools or []) if tool.type == "file_search"
        ]
        if not searches:
            return self
        scopes = [(n, tool.search_scope(f"tools[{n}]")) for n, tool in searches]
        first, scope = scopes[0]
        for n, other in scopes[1:]:
            if other != scope:
                raise InvalidRequestError(
                    f"tools[{n}] narrows the search otherwise than tools[{first}] (filters, "
                    "max_num_results or ranking_options): the stores are searched together, "
                    "once; give them in one file_search tool",
                    param=f"tools[{n}]",
                )
        filters = scope.filters
        ids = list(dict.fromkeys(i for _, tool in searches for i in tool.vector_store_ids or []))
        if not ids or len(ids) > MAX_COLLECTIONS:
            raise InvalidRequestError(
                f"file_search names {len(ids)} vector stores: give 1 to {MAX_COLLECTIONS} ids "
                "in vector_store_ids",
                param="tools",
            )
        options = self.ragtune or RagtuneOptions()
        named = options.searched()
        if named and set(named) != set(ids):
            raise InvalidRequestError(
                "file_search and ragtune.collection(s) name different collections: give them "
                "in one place",
                param="ragtune.collection",
            )
        if filters is not None and options.filters is not None and options.filters != filters:
            raise InvalidRequestError(
                "file_search's filters and ragtune.filters differ: give the filters in one place",
                param="ragtune.filters",
            )
        if options.route in ("adapter", "base"):
            raise InvalidRequestError(
                f"file_search asks for the documents, but ragtune.route is {options.route!r}: "
                "use rag or adapter+rag",
                param="ragtune.route",
            )
        self.tools = [tool for tool in self.tools or [] if tool.type != "file_search"] or None
        chose_search = isinstance(self.tool_choice, FileSearchChoice)
        if self.tools is None and (chose_search or self.tool_choice in ("auto", "required")):
            self.tool_choice = None
        elif chose_search:
            # The tool forced is the search, done: no function is called in this answer (and
            # "auto" would need the engine's tool-call parser, which the client never asked for).
            self.tool_choice = "none"
        searched = (
            {"collection": ids[0], "collections": None}
            if len(ids) == 1
            else {"collection": None, "collections": ids}
        )
        self.ragtune = options.model_copy(
            update={
                **searched,
                "route": options.route or "rag",
                "filters": filters if filters is not None else options.filters,
            }
        )
        self._search_scope = scope
        return self

    @property
    def search_scope(self) -> SearchScope:
        """What a `file_search` tool narrowed the search to (nothing, without one)."""
        return self._search_scope

    @field_validator("messages")
    @classmethod
    def _last_message_has_text(cls, messages: list[ChatMessage]) -> list[ChatMessage]:
        if not any(m.role == "user" and m.text().strip() for m in messages):
            raise ValueError("the conversation needs at least one user message with text")
        return messages

    def question(self) -> str:
        """What the request asks: the last user message with text."""
        return last_user_text((m.role, m.text()) for m in self.messages)

    def user_turns(self) -> list[str]:
        """The user messages with text, oldest first: what retrieval and adapter matching read
        (a follow-up with the messages before it: `retrieval.conversation`)."""
        return user_texts((m.role, m.text()) for m in self.messages)

    def conversation(self) -> list[dict[str, Any]]:
        """The messages as the model's chat template reads them (`ChatMessage.for_template`)."""
        return [message.for_template() for message in self.messages]

    def engine_tools(self) -> list[dict[str, Any]] | None:
        """The checked tools as the engine and the chat template receive them."""
        return [tool.for_engine() for tool in self.tools] if self.tools else None

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

    def check_content(self, *, auto_tool_choice: bool) -> None:
        """What the model cannot read (non-text parts), tools it cannot be offered and formats
        it cannot be held to: InvalidRequestError naming the field. `auto_tool_choice`: the
        engine parses the model's own tool calls (tool_choice "auto" is possible)."""
        for index, message in enumerate(self.messages):
            message.check(index, self.model)
        check_tools(self.tools, self.tool_choice, auto_tool_choice=auto_tool_choice)
        if self.response_format is not None:
            self.response_format.check()


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
    collection: str = ""
    """The collection (vector store) the passage was found in."""


class RagtuneInfo(BaseModel):
    """How ragtune answered: the route taken, why, the passages given to the model, and how well
    they support the answer."""

    route: Route
    adapter: str | None = None
    adapter_version: int | None = None
    reason: str
    scores: dict[str, float] = Field(default_factory=dict)
    sources: list[SourceInfo] = Field(default_factory=list)
    grounding: GroundingInfo | None = None
    """How well the passages support the answer's sentences: on a whole answer given passages,
    and on a stream's last chunk (`choices` empty); absent otherwise."""

    def wire(self) -> dict[str, Any]:
        """The field as sent: `grounding` left out until it is known (a stream's first chunk
        does not know it yet; a route without passages never has one)."""
        return self.model_dump(exclude={"grounding"} if self.grounding is None else None)


class ResponseMessage(BaseModel):
    """The answer (documents the response; `shapes.py` makes what is sent)."""

    model_config = ConfigDict(extra="allow")
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    """Only when the model called tools."""


class Choice(BaseModel):
    model_config = ConfigDict(extra="allow")
    index: int
    message: ResponseMessage
    logprobs: dict[str, Any] | None = None
    """OpenAI's token log-probabilities, when the request asked for `logprobs`."""
    finish_reason: str | None = None
    """stop, length or tool_calls."""


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None
    completion_tokens_details: dict[str, int] | None = None


class ChatCompletionResponse(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None
    ragtune: RagtuneInfo
