"""Wire types of the Responses API (`POST /v1/responses`, OpenAI's text subset) plus the
`ragtune` extension. What the subset leaves out is declared here too, so that a request using it
is refused by name instead of half-answered."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from ragtune.serving.chat.protocol import MaxTokens, RagtuneInfo, RagtuneOptions

# Features of OpenAI's Responses API that ragtune does not provide, refused (400) when a request
# uses them (a value that is not null, false or empty), each with what to do instead. ragtune
# stores nothing, so nothing can refer to an earlier response, conversation or prompt.
UNSUPPORTED_FIELDS: dict[str, str] = {
    "previous_response_id": (
        "ragtune stores no responses: send the earlier turns in `input` (a previous "
        "response's `output` items can go back as they are)"
    ),
    "conversation": "ragtune stores no conversations: send the earlier turns in `input`",
    "prompt": "ragtune has no stored prompt templates: put the text in `instructions`",
    "background": (
        "ragtune answers within the request (whole or with `stream: true`); it keeps no "
        "responses to poll"
    ),
    "reasoning": "the served model has no separate reasoning channel: remove `reasoning`",
    "top_logprobs": "use POST /v1/chat/completions with `logprobs` and `top_logprobs`",
    "context_management": "ragtune does not compact conversations: send the turns that matter",
}
FILE_SEARCH_RESULTS = "file_search_call.results"
"""The one `include` value served: a file_search call's results (the passages given to the
model). Any other is refused (400)."""
NOT_INCLUDABLE = (
    "ragtune has no extra output to include but file_search_call.results (no logprobs, "
    "reasoning or other tool results)"
)
TEXT_ONLY_PARTS = frozenset({"input_image", "input_file", "input_audio"})
"""Content parts that carry something other than text: refused, naming the part and the model."""


class _Lenient(BaseModel):
    # OpenAI's items and parts carry fields ragtune has no use for (ids, status, phase,
    # annotations); they are accepted and ignored.
    model_config = ConfigDict(extra="allow")


class InputTextPart(_Lenient):
    type: Literal["input_text"]
    text: str


class OutputTextPart(_Lenient):
    """Text of an earlier answer (a previous response's output sent back as input)."""

    type: Literal["output_text"]
    text: str


class RefusalPart(_Lenient):
    type: Literal["refusal"]
    refusal: str


class OtherPart(_Lenient):
    """Any other kind of part (`input_image`, `input_file`, `input_audio`...): refused (400)."""

    type: str


def _part_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return kind if kind in ("input_text", "output_text", "refusal") else "other"


ContentPart = Annotated[
    Annotated[InputTextPart, Tag("input_text")]
    | Annotated[OutputTextPart, Tag("output_text")]
    | Annotated[RefusalPart, Tag("refusal")]
    | Annotated[OtherPart, Tag("other")],
    Discriminator(_part_kind),
]


class MessageItem(_Lenient):
    """A message of the conversation; `type` may be left out."""

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(_Lenient):
    """A call of a function tool the model made earlier (a previous response's output item)."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    arguments: str


class FunctionCallOutputItem(_Lenient):
    """What the caller's function returned for the call `call_id`."""

    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[ContentPart]


class FileSearchCallItem(_Lenient):
    """A `file_search` search of a previous response (its output item, sent back as it is): a
    record of what was searched then; this request's `file_search` searches afresh."""

    type: Literal["file_search_call"]


class OtherItem(_Lenient):
    """Any other kind of item (reasoning, item references, built-in tool calls...): refused."""

    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in ("message", "function_call", "function_call_output", "file_search_call"):
        return str(kind)
    return "message" if kind is None else "other"


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[FileSearchCallItem, Tag("file_search_call")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


class FunctionTool(_Lenient):
    """A function the model may call; its answer comes back as a `function_call` item."""

    type: Literal["function"]
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None
    """The arguments' JSON schema."""
    strict: bool | None = None


class OtherTool(_Lenient):
    """A built-in OpenAI tool: `file_search` (the RAG route over its vector stores'
    collections); any other (web_search, code_interpreter...) is refused (400)."""

    type: str


def _tool_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if kind == "function" else "other"


Tool = Annotated[
    Annotated[FunctionTool, Tag("function")] | Annotated[OtherTool, Tag("other")],
    Discriminator(_tool_kind),
]


class ToolChoiceFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    name: str = Field(min_length=1)


class OtherToolChoice(_Lenient):
    """A choice of a built-in tool, or of allowed tools: refused (400), but for `file_search`,
    the search its tool runs anyway."""

    type: str


def _choice_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    return "function" if kind == "function" else "other"


ToolChoice = (
    Literal["none", "auto", "required"]
    | Annotated[
        Annotated[ToolChoiceFunction, Tag("function")] | Annotated[OtherToolChoice, Tag("other")],
        Discriminator(_choice_kind),
    ]
)


class TextFormatText(BaseModel):
    type: Literal["text"]


class TextFormatJsonObject(BaseModel):
    type: Literal["json_object"]


class TextFormatJsonSchema(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)
    type: Literal["json_schema"]
    name: str = Field(min_length=1)
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[
    TextFormatText | TextFormatJsonObject | TextFormatJsonSchema, Field(discriminator="type")
]


class TextConfig(_Lenient):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ResponsesRequest(BaseModel):
    """OpenAI's Responses request, its text subset. Fields ragtune does not know are accepted
    and logged, never forwarded to the engine; the features it does not provide
    (`UNSUPPORTED_FIELDS`) are refused."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(description="The base model (the router decides) or an adapter's name.")
    input: str | list[InputItem] = Field(
        description="The question, or the conversation as message and function call items."
    )
    instructions: str | None = Field(
        default=None, description="A system message, put before the conversation."
    )
    max_output_tokens: MaxTokens | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    stream: bool = False
    store: bool | None = Field(
        default=None,
        description="Accepted and ignored: ragtune stores no responses (there is no "
        "GET /v1/responses/{id}; send earlier turns in `input`).",
    )
    metadata: dict[str, str] | None = None
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = Field(
        default=None, description="Only `disabled`: a conversation too long is a 400."
    )
    include: list[str] | None = Field(
        default=None,
        description="Only `file_search_call.results`: the file_search call item lists the "
        "passages given to the model.",
    )
    ragtune: RagtuneOptions | None = None

    def unknown_fields(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


# The Response object. The service builds it as a plain dict (what goes on the wire); these
# models document it in the OpenAPI document.


class FileCitation(BaseModel):
    """A citation marker ([n]) of the answer: where it is in the text, and the file passage n
    came from."""

    type: Literal["file_citation"] = "file_citation"
    index: int
    """The marker's character offset in the text."""
    file_id: str
    """The uploaded file; for a document ingested by `ragtune ingest`, its document id."""
    filename: str
    """The file's name as uploaded; for an ingested document, its path below the folder
    ingested."""


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[FileCitation] = Field(default_factory=list)
    """One per passage a citation marker names, when the request used `file_search`."""


class FileSearchResult(BaseModel):
    """A passage given to the model, as `/v1/vector_stores/{id}/search` reports it."""

    file_id: str
    filename: str
    score: float
    text: str
    attributes: dict[str, str | float | bool]


class OutputFileSearchCall(BaseModel):
    """The `file_search` tool's search, before the message: the query searched, and with
    `include: ["file_search_call.results"]` the passages given to the model (else absent)."""

    type: Literal["file_search_call"] = "file_search_call"
    id: str
    status: Literal["in_progress", "searching", "completed"]
    queries: list[str]
    results: list[FileSearchResult] | None = None


class OutputMessage(BaseModel):
    type: Literal["message"] = "message"
    id: str
    role: Literal["assistant"] = "assistant"
    status: Literal["in_progress", "completed", "incomplete"]
    content: list[OutputText]


class OutputFunctionCall(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    """Send it back with the function's result, as a `function_call_output` item."""
    name: str
    arguments: str
    """The arguments as a JSON text."""
    status: Literal["in_progress", "completed", "incomplete"]


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseErrorDetail(BaseModel):
    code: str
    message: str


class ResponseObject(BaseModel):
    """OpenAI's Response object, plus `ragtune`: the route taken, why, and the sources."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Literal["in_progress", "completed", "incomplete", "failed"]
    error: ResponseErrorDetail | None
    incomplete_details: IncompleteDetails | None
    instructions: str | None
    metadata: dict[str, str]
    model: str
    output: list[
        Annotated[
            OutputFileSearchCall | OutputMessage | OutputFunctionCall, Field(discriminator="type")
        ]
    ]
    parallel_tool_calls: bool
    temperature: float | None
    text: dict[str, Any]
    tool_choice: Any
    tools: list[dict[str, Any]]
    top_p: float | None
    background: bool = False
    truncation: Literal["disabled"] = "disabled"
    max_output_tokens: int | None = None
    usage: ResponseUsage | None = None
    user: str | None = None
    ragtune: RagtuneInfo
