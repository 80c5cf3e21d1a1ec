"""The chat service over the server's real parts, against fakes at the edges: an engine behind
`httpx.MockTransport` (what vLLM's OpenAI API answers), the fake embedder and the in-memory
store. Seconds, no model: what the service sends the engine and what it answers the client."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
from pydantic import ValidationError

from ragtune.adapters.provenance import CollectionSnapshot, DocumentVersion
from ragtune.adapters.registry import MANIFEST, AdapterManifest, AdapterRegistry
from ragtune.adapters.settings import AdapterSettings, adapters_dir
from ragtune.retrieval.adaptation import adopt, reembed
from ragtune.retrieval.conversation import DEFAULT_WEIGHTING, unknown_words_in
from ragtune.retrieval.embedder import TUNED_PREFIX, is_tuned
from ragtune.retrieval.errors import StoreUnavailableError
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord, VectorStore, open_store
from ragtune.serving.chat.protocol import ChatCompletionRequest
from ragtune.serving.chat.service import Routed
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.errors import ModelNotFoundError
from ragtune.serving.router import Evidence, RouteRequest, decision_features
from ragtune.serving.settings import (
    ApiSettings,
    EngineSettings,
    GroundingSettings,
    RouterSettings,
    ServingSettings,
)
from tests.support.fake_engine import BASE, FakeEngine, completion
from tests.support.fakes import FakeEmbedder, FakeTokenizer, InMemoryStore
from tests.support.openai_schema import assert_openai_shape
from tests.support.staleness import register_trained
from tests.support.vllm_bodies import vllm_completion, vllm_stream

TASK = "Write the title of a scientific article from its abstract."
PASSAGES = (
    "Invoices are refunded within thirty days of the refund request.",
    "The office is closed on public holidays and at weekends.",
)
REFUND_QUESTION = "How are invoices refunded, and within how many days?"
T = TypeVar("T")


def register(
    data_dir: Path, name: str, task: str, evaluation: dict[str, Any] | None = None
) -> None:
    """A registered adapter version as the registry stores it (its weights are never read:
    the fake engine takes any path)."""
    manifest = AdapterManifest(
        name=name, base_model=BASE, rank=8, alpha=16, target_modules=["q_proj"], task=task,
        examples=[], weights_sha256="0" * 64, created="2025-01-01T00:00:00Z",
        evaluation=evaluation or {},
    )  # fmt: skip
    folder = AdapterRegistry(AdapterSettings(data_dir=data_dir).adapters_dir).path(manifest)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(manifest.model_dump_json())


def metadata(n: int) -> dict[str, str | int]:
    """As ingestion writes it: the server's path, the reader's name, the document's id."""
    return {
        "source": f"/srv/docs/policy-{n}.md",
        "display_source": f"policy-{n}.md",
        "doc_id": f"policy-{n}",
        "section": "Refunds",
    }


def components(
    data_dir: Path,
    *engines: FakeEngine,
    router: RouterSettings | None = None,
    grounding: GroundingSettings | None = None,
    retrieval: RetrievalSettings | None = None,
    store: VectorStore | None = None,
) -> Components:
    settings = ServingSettings(
        retrieval=retrieval or RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir, max_model_len=2048),
        adapters=AdapterSettings(data_dir=data_dir),
        router=router or RouterSettings(),
        api=ApiSettings(allow_unauthenticated=True),
        grounding=grounding or GroundingSettings(),
    )
    embedder = FakeEmbedder()
    store = store or InMemoryStore()
    collection = store.collection("default", embedder.model_id, create=True)
    collection.add(
        [
            ChunkRecord(f"doc-{n}", text, metadata(n), embedder.embed([text])[0])
            for n, text in enumerate(PASSAGES, start=1)
        ]
    )
    pool = EnginePool([engine.client() for engine in engines], slots=2)
    return assemble(
        settings, store=store, embedder=embedder, engines=pool, tokenizer=FakeTokenizer(),
        base_model=BASE,
    )  # fmt: skip


def chat(model: str, question: str, **fields: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": model, "messages": [{"role": "user", "content": question}], **fields}
    )


def exchange(question: str, answer: str, last: str, **fields: Any) -> ChatCompletionRequest:
    """A request of two user turns to the base model, an assistant's answer between them."""
    return ChatCompletionRequest.model_validate(
        {
            "model": BASE,
            "messages": [
                {"role": "user", "content": question},
                {"role": "assistant", "content": answer},
                {"role": "user", "content": last},
            ],
            **fields,
        }
    )


def refund_follow_up(data_dir: Path, route: str | None) -> ChatCompletionRequest:
    """Two adapters registered, one for refunds and one for switching lights off, and "And how
    do I turn that off?" after a refund question, asking `route` (None: the router's)."""
    topic = "Within how many days are invoices refunded after a refund request?"
    register(data_dir, "refunder", topic)
    register(data_dir, "switcher", "Turn the lights off")
    asked = {"ragtune": {"route": route}} if route else {}
    return exchange(topic, "Within thirty days.", "And how do I turn that off?", **asked)


def tuned_embedder(monkeypatch: pytest.MonkeyPatch) -> FakeEmbedder:
    """The model a collection re-embedded by `ragtune tune embedder` reads with (the server
    loads it for a collection embedded with it)."""
    tuned = FakeEmbedder(dimension=32)
    tuned.model_id = TUNED_PREFIX + "default-1"
    monkeypatch.setattr(
        "ragtune.serving.retrievers.collection_embedder",
        lambda target, settings, configured: (
            tuned if is_tuned(target.embedding_model) else configured
        ),
    )
    return tuned


def routed_with_adapters(parts: Components, request: ChatCompletionRequest) -> Routed:
    """The request routed once the adapters registered are read."""

    async def plan() -> Routed:
        await anyio.to_thread.run_sync(parts.fleet.refresh)
        return parts.chat.route(parts.chat.read(request))

    return run(parts, plan)


def run(parts: Components, work: Callable[[], Awaitable[T]]) -> T:
    async def within() -> T:
        async with parts:
            return await work()

    return anyio.run(within)


def converse(parts: Components, messages: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    """The `ragtune` part of the answer to a conversation (`fields`: more of the request)."""

    async def answer() -> dict[str, Any]:
        request = ChatCompletionRequest.model_validate(
            {"model": BASE, "messages": messages, **fields}
        )
        return await parts.chat.complete(await parts.chat.prepare(request))

    info: dict[str, Any] = run(parts, answer)["ragtune"]
    return info


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine("http://engine-a", text="Thirty days.")


def test_the_rag_route_sends_numbered_passages_and_returns_the_sources(
    tmp_path: Path, engine: FakeEngine
) -> None:
    parts = components(tmp_path, engine)

    async def answer() -> dict[str, Any]:
        return await parts.chat.complete(await parts.chat.prepare(chat(BASE, REFUND_QUESTION)))

    response = run(parts, answer)
    (sent,) = engine.sent("/v1/chat/completions")
    assert sent["model"] == BASE
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    system = sent["messages"][0]["content"]
    assert "[1] (policy-1.md - Refunds)\n" + PASSAGES[0] in system
    assert PASSAGES[1] not in system  # below the evidence threshold
    assert response["model"] == BASE
    info = response["ragtune"]
    assert info["route"] == "rag"
    assert [(s["number"], s["document"], s["document_id"]) for s in info["sources"]] == [
        (1, "policy-1.md", "policy-1")
    ]
    assert info["scores"]["evidence_passing"] == 1.0
    assert parts.engines.in_flight(BASE) == 0


@pytest.mark.parametrize("query_turns", [3, 1])
def test_a_follow_up_retrieves_the_document_of_the_question_it_follows(
    tmp_path: Path, engine: FakeEngine, query_turns: int
) -> None:
    parts = components(tmp_path, engine, router=RouterSettings(query_turns=query_turns))
    question = "Within how many days are invoices refunded after a refund request?"
    conversation = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "Within thirty days."},
        {"role": "user", "content": "And how do I turn that off?"},
    ]

    info = converse(parts, conversation)
    if query_turns == 1:  # the follow-up alone names nothing the documents hold
        assert (info["route"], info["sources"]) == ("base", [])
    else:
        assert info["route"] == "rag"
        assert [s["document"] for s in info["sources"]] == ["policy-1.md"]


def test_the_routers_word_overlap_reads_what_a_follow_up_was_searched_for(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """The learned router's `lexical_overlap` (how many of the searched words the best passage
    holds) read the follow-up's own words: "And how do I turn that off?" shares none with the
    refund passage found for the conversation, which read as weak evidence."""
    parts = components(tmp_path, engine)
    question = "Within how many days are invoices refunded after a refund request?"
    follow_up = "And how do I turn that off?"
    request = exchange(question, "Within thirty days.", follow_up)
    routed = parts.chat.route(parts.chat.read(request))
    assert routed.queries == (f"{question}\n{follow_up}",)
    assert routed.hits[0].text == PASSAGES[0]
    assert routed.plan.features["lexical_overlap"] == 0.5  # 7 of its 14 words
    alone = decision_features(
        RouteRequest(follow_up),
        Evidence.of(routed.hits),
        routed.hits,
        [],
        {},
        RouterSettings(),
    )
    assert alone["lexical_overlap"] == 0.0
    # A question searched alone: its own words, as before.
    routed = parts.chat.route(parts.chat.read(chat(BASE, REFUND_QUESTION)))
    assert routed.plan.features["lexical_overlap"] == 0.625  # 5 of its 8 words


def test_worked_examples_before_a_prompt_are_not_what_its_passages_are_retrieved_for(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """`ragtune advise`'s few-shot variants put worked examples before an example's own turn
    as user/assistant pairs: read as a conversation, another example's input was what a
    follow-up-looking input was searched with (`own_turns`)."""
    parts = components(tmp_path, engine)
    shot = "Label it: within how many days are invoices refunded after a refund request?"
    own = "Label it: and how do I turn that off?"
    request = exchange(shot, "billing", own)
    as_conversation = parts.chat.read(request)
    assert as_conversation.history == (shot,)
    assert parts.chat.route(as_conversation).queries == (f"{shot}\n{own}",)
    read = parts.chat.read(request, own_turns=1)
    assert (read.question, read.history) == (own, ())
    assert parts.chat.route(read).queries == (own,)
    # An example of two user turns keeps both; more than there are is all of them.
    assert parts.chat.read(request, own_turns=2).history == (shot,)
    assert parts.chat.read(request, own_turns=5).history == (shot,)


def test_a_follow_up_just_after_its_collection_was_re_embedded_elsewhere_is_answered(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`ragtune tune embedder` (another process) puts a copy embedded with another model in
    the place of the collection between two of the server's checks (an hour apart here): the
    next follow-up, whose query is told from the collection this server still holds (now
    deleted), is built again on the new one, with its model, not failed."""
    tuned = tuned_embedder(monkeypatch)
    retrieval = RetrievalSettings(data_dir=tmp_path, lexical_check_seconds=3600)
    conversation = [
        {"role": "user", "content": "Within how many days are invoices refunded?"},
        {"role": "assistant", "content": "Within thirty days."},
        {"role": "user", "content": "And how do I turn that off?"},
    ]
    with open_store(retrieval, "write") as store:
        parts = components(tmp_path, engine, retrieval=retrieval, store=store)

        async def answer() -> dict[str, Any]:
            request = ChatCompletionRequest.model_validate(
                {"model": BASE, "messages": conversation}
            )
            return await parts.chat.complete(await parts.chat.prepare(request))

        async def before_and_after() -> list[dict[str, Any]]:
            before = await answer()
            old = store.collection("default", FakeEmbedder().model_id)
            copied_at = old.revision()
            adopt(store, old, reembed(store, old, tuned, old.embedding_model), tuned, copied_at)
            return [before, await answer()]

        answered = run(parts, before_and_after)
    for response in answered:
        info = response["ragtune"]
        assert info["route"] == "rag"
        assert [s["document"] for s in info["sources"]] == ["policy-1.md"]
    assert tuned.embedded > 0  # the follow-up's turns, embedded by the collection's new model


@pytest.mark.parametrize("own_topic_words", [2, 0])
def test_small_talk_after_a_question_gets_no_passages_of_it(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, own_topic_words: int
) -> None:
    """Small talk finds no evidence, as a follow-up does not; the words it names that no
    document uses tell it has a topic of its own, so the earlier question's passages do not
    reach its prompt (0: the rule off, as before). The test's two policies use too few words
    for the rule to be on by default: here it counts from the first word."""
    monkeypatch.setattr(
        "ragtune.serving.retrievers.unknown_words_in", partial(unknown_words_in, vocabulary=0)
    )
    parts = components(tmp_path, engine, router=RouterSettings(own_topic_words=own_topic_words))
    conversation = [
        {"role": "user", "content": REFUND_QUESTION},
        {"role": "assistant", "content": "Within thirty days."},
        {"role": "user", "content": "What should I cook for dinner tonight with chicken?"},
    ]

    info = converse(parts, conversation)
    if own_topic_words:
        assert (info["route"], info["sources"]) == ("base", [])
    else:
        assert info["route"] == "rag"
        assert [s["document"] for s in info["sources"]] == ["policy-1.md"]


def test_a_collection_too_small_to_tell_does_not_keep_small_talk_with_the_question(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Searched together with a collection large enough to tell (here: 5 words or more), one
    that uses too few words is left out of the telling, not taken to know every word."""
    monkeypatch.setattr(
        "ragtune.serving.retrievers.unknown_words_in", partial(unknown_words_in, vocabulary=5)
    )
    store = InMemoryStore()
    notes = store.collection("notes", FakeEmbedder().model_id, create=True)
    text = "Lunch is at noon."  # two words: lunch, noon
    notes.add([ChunkRecord("n", text, metadata(9), FakeEmbedder().embed([text])[0])])
    parts = components(tmp_path, engine, store=store)
    conversation = [
        {"role": "user", "content": REFUND_QUESTION},
        {"role": "assistant", "content": "Within thirty days."},
        {"role": "user", "content": "What should I cook for dinner tonight with chicken?"},
    ]

    info = converse(parts, conversation, ragtune={"collections": ["default", "notes"]})
    assert (info["route"], info["sources"]) == ("base", [])


def test_the_router_settings_choose_which_messages_stand_alone(
    tmp_path: Path, engine: FakeEngine
) -> None:
    """`standalone_similarity` is the router's setting, apart from `evidence_threshold`, and
    reaches the chat path; its defaults are the conversation query's."""
    assert RouterSettings().turn_weighting() == DEFAULT_WEIGHTING
    router = RouterSettings(standalone_similarity=0.5, evidence_threshold=0.3)
    parts = components(tmp_path, engine, router=router)
    assert parts.chat.weighting.standalone_similarity == 0.5
    for bad in (-0.1, 1.5):
        with pytest.raises(ValidationError, match="standalone_similarity"):
            RouterSettings(standalone_similarity=bad)


def test_a_new_question_in_a_conversation_is_searched_alone(
    tmp_path: Path, engine: FakeEngine
) -> None:
    parts = components(tmp_path, engine)
    conversation = [
        {"role": "user", "content": REFUND_QUESTION},
        {"role": "assistant", "content": "Within thirty days."},
        {"role": "user", "content": "Is the office closed on public holidays and at weekends?"},
    ]

    info = converse(parts, conversation)
    assert info["route"] == "rag"
    assert [s["document"] for s in info["sources"]] == ["policy-2.md"]


@pytest.mark.parametrize("route", [None, "adapter", "adapter+rag"])
def test_an_adapter_is_matched_to_the_conversation_whichever_route_is_asked(
    tmp_path: Path, engine: FakeEngine, route: str | None
) -> None:
    """A follow-up is read with its topic for adapter matching too, also when the request asks
    for a route that searches no documents (they still tell a follow-up from a new question):
    the same conversation gets the same adapter on every route that takes one."""
    request = refund_follow_up(tmp_path, route)
    parts = components(tmp_path, engine)
    routed = routed_with_adapters(parts, request)
    assert routed.plan.adapter == "refunder"
    follow_up_alone = [
        name
        for name, _ in parts.chat.fleet.matches(
            parts.chat.embedder.embed_query("And how do I turn that off?")
        )
    ]
    assert follow_up_alone[0] == "switcher"  # what the last turn alone would have matched


@pytest.mark.parametrize("route", [None, "adapter", "base"])
def test_an_adapter_is_matched_to_the_conversation_over_a_collection_with_a_tuned_model(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, route: str | None
) -> None:
    """A collection re-embedded with a model tuned for it (`ragtune tune embedder`) tells a
    follow-up from a new question with its own model, also on a route that searches nothing:
    asked with the shared embedder's vector, which it cannot compare, a forced adapter or base
    route read the follow-up alone while the automatic route read it with its topic."""
    tuned = tuned_embedder(monkeypatch)
    request = refund_follow_up(tmp_path, route)
    retrieval = RetrievalSettings(data_dir=tmp_path)
    with open_store(retrieval, "write") as store:
        parts = components(tmp_path, engine, retrieval=retrieval, store=store)
        old = store.collection("default", FakeEmbedder().model_id)
        copied_at = old.revision()
        adopt(store, old, reembed(store, old, tuned, old.embedding_model), tuned, copied_at)
        tuned.calls.clear()
        routed = routed_with_adapters(parts, request)
    assert tuned.embedded > 0  # the turns, embedded by the collection's model to tell them
    # The adapters are matched to the conversation's topic, not to the follow-up's own words
    # (which match "switcher"), on every route.
    assert routed.matches[0][0] == "refunder"
    if route == "base":
        assert (routed.plan.route, routed.plan.adapter) == ("base", None)
    else:
        assert routed.plan.adapter == "refunder"
        assert routed.plan.route in {"adapter", "adapter+rag"}


@pytest.mark.parametrize("own_topic_words", [2, 0])
def test_small_talk_is_matched_to_adapters_alone_on_a_route_that_searches_nothing(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, own_topic_words: int
) -> None:
    """On the `adapter` route the documents still tell small talk from a follow-up, by the
    words it names that none of them uses (the rule counting from the first word here)."""
    monkeypatch.setattr(
        "ragtune.serving.retrievers.unknown_words_in", partial(unknown_words_in, vocabulary=0)
    )
    topic = "Within how many days are invoices refunded after a refund request?"
    small_talk = "What should I cook for dinner tonight with chicken?"
    register(tmp_path, "refunder", topic)
    register(tmp_path, "chef", "Cook chicken for dinner")
    router = RouterSettings(own_topic_words=own_topic_words)
    parts = components(tmp_path, engine, router=router)
    body = {
        "model": BASE,
        "ragtune": {"route": "adapter"},
        "messages": [
            {"role": "user", "content": topic},
            {"role": "assistant", "content": "Within thirty days."},
            {"role": "user", "content": small_talk},
        ],
    }

    async def plan() -> Any:
        await anyio.to_thread.run_sync(parts.fleet.refresh)
        return parts.chat.route(parts.chat.read(ChatCompletionRequest.model_validate(body)))

    routed = run(parts, plan)
    assert routed.plan.adapter == ("chef" if own_topic_words else "refunder")


def test_a_route_that_searches_nothing_reads_the_last_turn_alone_when_the_store_is_down(
    tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The documents only tell a follow-up from a new question on the adapter route: a store
    that does not answer leaves the last turn alone (the route needs no documents), while a
    fault of another kind is not hidden."""
    register(tmp_path, "switcher", "Turn the lights off")
    parts = components(tmp_path, engine)
    body = {
        "model": BASE,
        "ragtune": {"route": "adapter"},
        "messages": [
            {"role": "user", "content": "Within how many days are invoices refunded?"},
            {"role": "assistant", "content": "Within thirty days."},
            {"role": "user", "content": "And how do I turn that off?"},
        ],
    }

    def route() -> Any:
        async def plan() -> Any:
            await anyio.to_thread.run_sync(parts.fleet.refresh)
            return parts.chat.route(parts.chat.read(ChatCompletionRequest.model_validate(body)))

        return run(parts, plan)

    def down(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailableError("the Chroma server at http://chroma:8000 does not answer")

    monkeypatch.setattr(parts.chat.retrievers, "closest", down)
    routed = route()
    assert routed.plan.adapter == "switcher"  # the last turn alone matches it

    def broken(*args: Any, **kwargs: Any) -> None:
        raise TypeError("a bug")

    monkeypatch.setattr(parts.chat.retrievers, "closest", broken)
    with pytest.raises(TypeError, match="a bug"):
        route()


def test_the_adapter_route_sends_the_engine_name_of_the_version(
    tmp_path: Path, engine: FakeEngine
) -> None:
    register(tmp_path, "titler", TASK)
    parts = components(tmp_path, engine)

    async def answer() -> dict[str, Any]:
        request = chat("titler", "Deep nets learn features from raw pixels.")
        return await parts.chat.complete(await parts.chat.prepare(request))

    response = run(parts, answer)
    (loaded,) = engine.sent("/v1/load_lora_adapter")
    assert loaded["lora_name"] == "titler@v1"
    assert loaded["lora_path"] == str(adapters_dir(tmp_path).resolve() / "titler" / "v1")
    (sent,) = engine.sent("/v1/chat/completions")
    assert sent["model"] == "titler@v1"
    assert sent["messages"] == [
        {"role": "user", "content": "Deep nets learn features from raw pixels."}
    ]
    assert response["model"] == "titler"  # the client's name, not the engine's
    info = response["ragtune"]
    assert (info["route"], info["adapter"], info["adapter_version"]) == ("adapter", "titler", 1)


def test_an_unknown_model_is_the_clients_404_before_any_engine_call(
    tmp_path: Path, engine: FakeEngine
) -> None:
    parts = components(tmp_path, engine)

    async def prepare() -> None:
        await parts.chat.prepare(chat("no-such-adapter", "hello"))

    with pytest.raises(ModelNotFoundError, match="no-such-adapter"):
        run(parts, prepare)
    assert engine.calls == []


def test_an_adapter_the_engine_lost_is_loaded_again_and_the_request_sent_once_more(
    tmp_path: Path, engine: FakeEngine
) -> None:
    register(tmp_path, "titler", TASK)
    parts = components(tmp_path, engine)

    async def twice() -> dict[str, Any]:
        first = await parts.chat.prepare(chat("titler", "A title for this abstract, please."))
        await parts.chat.complete(first)
        engine.adapters.clear()  # the engine restarted: ragtune still counts it resident
        second = await parts.chat.prepare(chat("titler", "Another title, please."))
        return await parts.chat.complete(second)

    response = run(parts, twice)
    assert response["ragtune"]["adapter"] == "titler"
    assert [b["lora_name"] for b in engine.sent("/v1/load_lora_adapter")] == ["titler@v1"] * 2
    sent = engine.sent("/v1/chat/completions")
    assert len(sent) == 3  # the first request, then the second one twice: 404, then answered
    assert {b["model"] for b in sent} == {"titler@v1"}
    assert parts.engines.in_flight("titler@v1") == 0


def test_a_replica_refusing_connections_passes_the_request_to_another(tmp_path: Path) -> None:
    down = FakeEngine("http://engine-a")
    up = FakeEngine("http://engine-b", text="answer from http://engine-b")
    down.refuse = True
    parts = components(tmp_path, down, up)

    async def answer() -> dict[str, Any]:
        prepared = await parts.chat.prepare(chat(BASE, "Good morning!"))
        assert prepared.lease.replica.url == "http://engine-a"  # the first choice, both idle
        return await parts.chat.complete(prepared)

    response = run(parts, answer)
    assert response["choices"][0]["message"]["content"] == "answer from http://engine-b"
    assert len(up.sent("/v1/chat/completions")) == 1
    first, second = parts.engines.replicas
    assert not first.up()  # passed over for a while
    assert first.active == second.active == 0  # counted on one replica at a time, then released


def test_the_first_chunk_of_a_stream_carries_ragtune(tmp_path: Path, engine: FakeEngine) -> None:
    parts = components(tmp_path, engine)

    async def stream() -> list[str]:
        prepared = await parts.chat.prepare(chat(BASE, REFUND_QUESTION, stream=True))
        return [event async for event in await parts.chat.open_stream(prepared)]

    events = run(parts, stream)
    assert events[-1] == "data: [DONE]\n\n"
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    *answer, closing = chunks  # the answer's chunks, then its grounding
    assert chunks[0]["ragtune"]["route"] == "rag"
    assert chunks[0]["ragtune"]["sources"][0]["document"] == "policy-1.md"
    assert all("ragtune" not in c for c in answer[1:])
    assert "".join(c["choices"][0]["delta"]["content"] for c in answer) == "Thirty days."
    assert (closing["choices"], list(closing["ragtune"])) == ([], ["grounding"])
    assert all(c["model"] == BASE for c in chunks)
    assert all("usage" not in c for c in chunks)  # the client did not ask for it
    (sent,) = engine.sent("/v1/chat/completions")
    assert sent["stream_options"] == {"include_usage": True}  # asked for the metrics
    assert parts.engines.in_flight(BASE) == 0


def test_the_answer_bound_reaches_the_engine_as_one_field(
    tmp_path: Path, engine: FakeEngine
) -> None:
    parts = components(tmp_path, engine)

    async def answer() -> None:
        request = chat(BASE, "Good morning!", max_completion_tokens=7, temperature=0)
        await parts.chat.complete(await parts.chat.prepare(request))

    run(parts, answer)
    (sent,) = engine.sent("/v1/chat/completions")
    assert sent["max_tokens"] == 7
    assert "max_completion_tokens" not in sent
    assert sent["temperature"] == 0


@pytest.mark.parametrize("include_usage", [False, True])
def test_answers_reach_the_client_in_openais_shape_without_the_engines_fields(
    tmp_path: Path, engine: FakeEngine, include_usage: bool
) -> None:
    engine.answer, engine.chunks = vllm_completion(), vllm_stream()
    parts = components(tmp_path, engine)

    async def both() -> tuple[dict[str, Any], list[str]]:
        whole = await parts.chat.complete(await parts.chat.prepare(chat(BASE, REFUND_QUESTION)))
        request = chat(
            BASE, REFUND_QUESTION, stream=True, stream_options={"include_usage": include_usage}
        )
        prepared = await parts.chat.prepare(request)
        return whole, [event async for event in await parts.chat.open_stream(prepared)]

    whole, events = run(parts, both)
    assert_openai_shape("chat.completion", whole)
    assert whole["ragtune"]["route"] == "rag"
    assert "prompt_text" not in whole  # the prompt ragtune built stays on the server
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    for chunk in chunks:
        assert_openai_shape("chat.completion.chunk", chunk)
    assert "ragtune" in chunks[0]
    assert ("usage" in chunks[-1]) is include_usage


def test_an_engine_error_in_a_stream_reaches_the_client_as_openais_error(
    tmp_path: Path, engine: FakeEngine
) -> None:
    first, *_ = vllm_stream()
    engine.chunks = [first, {"error": {"message": "boom", "type": "InternalServerError"}}]
    parts = components(tmp_path, engine)

    async def stream() -> list[str]:
        prepared = await parts.chat.prepare(chat(BASE, REFUND_QUESTION, stream=True))
        return [event async for event in await parts.chat.open_stream(prepared)]

    events = run(parts, stream)
    assert events[-1] == "data: [DONE]\n\n"
    first_chunk, error = (json.loads(e.removeprefix("data: ")) for e in events[:-1])
    assert_openai_shape("chat.completion.chunk", first_chunk)
    assert_openai_shape("error", error)
    assert error["error"]["code"] == "engine_stream_error"


@pytest.mark.parametrize(("verdict", "chosen"), [(None, "titler"), ("prompting", None)])
def test_the_router_leaves_an_adapter_advise_found_not_to_pay(
    tmp_path: Path, engine: FakeEngine, verdict: str | None, chosen: str | None
) -> None:
    evaluation = {"advise": {"verdict": verdict}} if verdict else None
    register(tmp_path, "titler", TASK, evaluation)
    parts = components(tmp_path, engine)

    async def answers() -> list[dict[str, Any]]:
        return [
            (await parts.chat.complete(await parts.chat.prepare(chat(model, TASK))))["ragtune"]
            for model in (BASE, "titler")
        ]

    routed, named = run(parts, answers)
    assert routed["adapter"] == chosen
    if verdict:
        assert routed["route"] in ("rag", "base")
        assert "ragtune advise" in routed["reason"]
    # Named, the adapter answers whatever the advice.
    assert named["adapter"] == "titler"


def test_an_adapter_trained_on_an_earlier_version_of_the_evidence_gets_the_fresh_passages(
    tmp_path: Path, engine: FakeEngine
) -> None:
    earlier = CollectionSnapshot(
        name="default",
        documents=[  # policy-1 changed since (its hash differs), policy-2 did not
            DocumentVersion(doc_id="policy-1", source="/srv/docs/policy-1.md", doc_hash="before"),
            DocumentVersion(doc_id="policy-2", source="/srv/docs/policy-2.md", doc_hash=""),
        ],
    )
    register_trained(tmp_path, "titler", TASK, earlier)
    register_trained(tmp_path, "coder", "Write Python code.", None)
    parts = components(tmp_path, engine)

    async def answers() -> list[dict[str, Any]]:
        return [
            await parts.chat.complete(await parts.chat.prepare(chat(model, REFUND_QUESTION)))
            for model in ("titler", "coder")
        ]

    stale, other = run(parts, answers)
    info = stale["ragtune"]
    assert (info["route"], info["adapter"]) == ("adapter+rag", "titler")
    assert "earlier revision of the documents" in info["reason"]
    assert "policy-1.md" in info["reason"]
    assert [s["document"] for s in info["sources"]] == ["policy-1.md"]
    sent = engine.sent("/v1/chat/completions")[0]
    assert sent["model"] == "titler@v1"
    assert PASSAGES[0] in sent["messages"][0]["content"]
    # An adapter trained alongside no collection answers alone, as before.
    assert (other["ragtune"]["route"], other["ragtune"]["adapter"]) == ("adapter", "coder")


# Grounding: the answer checked against the passages it was given

SUPPORTED = "Invoices are refunded within thirty days of the refund request [1]."
OFF_TOPIC = "The cafeteria serves vegetarian lunches on Wednesdays."


def stream_chunks(parts: Components, request: ChatCompletionRequest) -> list[dict[str, Any]]:
    async def stream() -> list[str]:
        return [e async for e in await parts.chat.open_stream(await parts.chat.prepare(request))]

    events = run(parts, stream)
    assert events[-1] == "data: [DONE]\n\n"
    return [json.loads(e.removeprefix("data: ")) for e in events[:-1]]


def test_a_whole_answer_given_passages_carries_its_grounding(
    tmp_path: Path, engine: FakeEngine
) -> None:
    engine.answer = completion(BASE, f"{SUPPORTED} {OFF_TOPIC}")
    parts = components(tmp_path, engine)

    async def answer() -> dict[str, Any]:
        return await parts.chat.complete(await parts.chat.prepare(chat(BASE, REFUND_QUESTION)))

    response = run(parts, answer)
    assert_openai_shape("chat.completion", response)
    assert response["ragtune"]["route"] == "rag"
    assert response["ragtune"]["grounding"] == {
        "score": 0.5, "sentences": 2, "unsupported": [OFF_TOPIC], "method": "similarity",
    }  # fmt: skip


@pytest.mark.parametrize("include_usage", [False, True])
def test_a_stream_ends_with_a_chunk_carrying_the_grounding_of_the_whole_answer(
    tmp_path: Path, engine: FakeEngine, include_usage: bool
) -> None:
    head = {"id": "c", "object": "chat.completion.chunk", "created": 7, "model": BASE}
    deltas = ["Invoices are refunded within thirty ", "days of the refund request [1]. ", OFF_TOPIC]
    engine.chunks = [
        {**head, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
        for text in deltas
    ] + [
        {**head, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3,
                                          "total_tokens": 12}},
    ]  # fmt: skip
    parts = components(tmp_path, engine)
    request = chat(
        BASE, REFUND_QUESTION, stream=True, stream_options={"include_usage": include_usage}
    )
    chunks = stream_chunks(parts, request)
    for chunk in chunks:
        assert_openai_shape("chat.completion.chunk", chunk)
    assert "grounding" not in chunks[0]["ragtune"]  # not known yet
    if include_usage:  # the usage chunk stays last, as clients expect
        *chunks, usage = chunks
        assert usage["usage"]["completion_tokens"] == 3
    *answer, closing = chunks
    assert len(answer) == 3
    assert closing == {
        "id": "c", "object": "chat.completion.chunk", "created": 7, "model": BASE, "choices": [],
        "ragtune": {"grounding": {"score": 0.5, "sentences": 2, "unsupported": [OFF_TOPIC],
                                  "method": "similarity"}},
    }  # fmt: skip
    assert parts.engines.in_flight(BASE) == 0


def test_an_answer_without_passages_carries_no_grounding(
    tmp_path: Path, engine: FakeEngine
) -> None:
    engine.answer = completion(BASE, f"{SUPPORTED} {OFF_TOPIC}")
    engine.chunks = [
        {"id": "c", "object": "chat.completion.chunk", "created": 0, "model": BASE,
         "choices": [{"index": 0, "delta": {"content": OFF_TOPIC}, "finish_reason": "stop"}]},
    ]  # fmt: skip
    parts = components(tmp_path, engine)

    async def both() -> tuple[dict[str, Any], list[str]]:
        whole = await parts.chat.complete(await parts.chat.prepare(chat(BASE, "Good morning!")))
        prepared = await parts.chat.prepare(chat(BASE, "Good morning!", stream=True))
        return whole, [event async for event in await parts.chat.open_stream(prepared)]

    whole, events = run(parts, both)
    assert (whole["ragtune"]["route"], whole["ragtune"]["sources"]) == ("base", [])
    assert "grounding" not in whole["ragtune"]
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == [OFF_TOPIC]
    assert "grounding" not in chunks[0]["ragtune"]


def test_grounding_off_checks_nothing(tmp_path: Path, engine: FakeEngine) -> None:
    engine.answer = completion(BASE, OFF_TOPIC)
    parts = components(tmp_path, engine, grounding=GroundingSettings(grounding=False))

    async def answer() -> dict[str, Any]:
        return await parts.chat.complete(await parts.chat.prepare(chat(BASE, REFUND_QUESTION)))

    info = run(parts, answer)["ragtune"]
    assert info["route"] == "rag"
    assert "grounding" not in info


@pytest.mark.parametrize("stream", [False, True])
def test_shadow_mode_runs_the_route_not_taken_after_the_answer_and_appends_the_pair(
    tmp_path: Path, engine: FakeEngine, stream: bool
) -> None:
    register(tmp_path, "titler", TASK)
    parts = components(tmp_path, engine, router=RouterSettings(shadow_rate=1.0))
    engine.answer = completion(BASE, "Invoices are refunded within thirty days.")
    shadow = parts.chat.shadow
    assert shadow is not None

    async def answer() -> Any:
        prepared = await parts.chat.prepare(chat(BASE, REFUND_QUESTION, stream=stream))
        if stream:
            events = [e async for e in await parts.chat.open_stream(prepared)]
            info = json.loads(events[0].removeprefix("data: "))["ragtune"]
        else:
            info = (await parts.chat.complete(prepared))["ragtune"]
        # the client's answer is done before the shadow run ends (it runs in the background)
        with anyio.fail_after(10):
            while shadow.running:
                await anyio.sleep(0.01)
        # a request that forces its route is never shadowed
        forced = chat(BASE, REFUND_QUESTION, ragtune={"route": "base"})
        await parts.chat.complete(await parts.chat.prepare(forced))
        return info

    info = run(parts, answer)
    assert info["route"] == "rag"
    sent = engine.sent("/v1/chat/completions")
    assert [body["model"] for body in sent] == [BASE, "titler@v1", BASE]
    assert not sent[1].get("stream")
    (line,) = (tmp_path / "router" / "outcomes.jsonl").read_text().splitlines()
    pair = json.loads(line)
    assert pair["origin"] == "shadow"
    assert pair["decision"] == "rag"
    assert [(o["route"], o["adapter"]) for o in pair["outcomes"]] == [
        ("rag", None),
        ("adapter", "titler"),
    ]
    assert all(o["metric"] == "grounding" for o in pair["outcomes"])  # the documents cover it
    assert "question" not in pair  # no prompt text unless prompt logging is on
    assert "answer" not in pair["outcomes"][0]
    assert set(pair["features"]) >= {"evidence_top", "adapter_match", "lexical_overlap"}
