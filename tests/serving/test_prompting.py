"""The prompt builder with a tiny fake tokenizer (a token is a word): passages within the
context's budget, dropped lowest score first; the context length refused with its numbers; the
caller's system message kept after ours; the routed prompt as the plan says."""

from __future__ import annotations

import anyio
import pytest

from ragtune.retrieval.search import SearchHit
from ragtune.serving.errors import ContextLengthError
from ragtune.serving.prompting import (
    NO_EVIDENCE_INSTRUCTIONS,
    RAG_INSTRUCTIONS,
    SLACK_TOKENS,
    PromptBuilder,
    PromptFactory,
    render_passage,
    with_system,
)
from ragtune.serving.router import AnswerBound, RoutePlan
from tests.support.fakes import FakeTokenizer

QUESTION = [{"role": "user", "content": "how are invoices refunded"}]
WORDS = 10


def hit(n: int, score: float) -> SearchHit:
    text = " ".join(f"w{n}x{i}" for i in range(WORDS))
    return SearchHit(
        rank=n, chunk_id=f"c{n}", text=text, source=f"/srv/d{n}.md", section="", score=score,
        metadata={}, dense_score=score, document=f"d{n}.md",
    )  # fmt: skip


def builder(context_length: int) -> PromptBuilder:
    return PromptBuilder(FakeTokenizer(), context_length)


def test_the_conversation_costs_what_the_template_says() -> None:
    # <|im_start|> user, 4 words, <|im_end|>; then <|im_start|> assistant.
    assert builder(100).count(QUESTION) == 1 + 1 + 4 + 1 + 2


def test_passages_that_do_not_fit_are_dropped_last_ranked_first() -> None:
    answer = 20
    fixed = builder(10_000).count(with_system(QUESTION, builder(10_000).context_block([])))
    cost = len(FakeTokenizer().encode(render_passage(1, hit(1, 0.0)) + "\n\n"))
    # Room for two passages, not three.
    context = fixed + SLACK_TOKENS + answer + 2 * cost + cost // 2
    hits = [hit(2, 0.9), hit(3, 0.5), hit(1, 0.2)]  # in retrieval's order
    plan = builder(context).rag(QUESTION, hits, answer)
    assert [h.chunk_id for h in plan.passages] == ["c2", "c3"]
    assert plan.dropped == 1
    assert plan.prompt_tokens + answer <= context
    system = plan.messages[0]["content"]
    # Numbered in the order given to the model: [n] is passages[n - 1].
    assert system.index("[1] (d2.md)") < system.index("[2] (d3.md)")
    assert "d1.md" not in system
    assert "/srv" not in system  # the reader's name of a document, not the server's path


def test_every_passage_fits_a_large_context() -> None:
    plan = builder(10_000).rag(QUESTION, [hit(2, 0.9), hit(1, 0.2)], 100)
    assert [h.chunk_id for h in plan.passages] == ["c2", "c1"]
    assert plan.dropped == 0


def test_passages_keep_the_order_retrieval_gave_over_their_fused_scores() -> None:
    """A reranker's order, or several collections interleaved by rank: a fused score is
    neither (it does not compare across collections), and sorting by it undid both."""
    plan = builder(10_000).rag(QUESTION, [hit(1, 0.2), hit(2, 0.9), hit(3, 0.5)], 100)
    assert [h.chunk_id for h in plan.passages] == ["c1", "c2", "c3"]
    system = plan.messages[0]["content"]
    assert system.index("[1] (d1.md)") < system.index("[2] (d2.md)") < system.index("[3] (d3")


def test_a_prompt_over_the_context_is_refused_with_its_numbers() -> None:
    with pytest.raises(ContextLengthError) as caught:
        builder(10).plain(QUESTION, 5)
    assert str(caught.value) == (
        "the prompt takes 9 tokens and the answer may take 5, 14 in all, beyond the model's "
        "context of 10 tokens; shorten the conversation or lower max_tokens"
    )
    assert (caught.value.limit, caught.value.requested) == (10, 14)


def test_no_passage_at_all_tells_the_model_the_documents_do_not_cover_it() -> None:
    plan = builder(1000).rag(QUESTION, [], 10)
    assert plan.messages[0] == {"role": "system", "content": NO_EVIDENCE_INSTRUCTIONS}
    assert plan.passages == []


def test_the_callers_system_message_is_kept_after_ours() -> None:
    messages = [{"role": "system", "content": "Answer in French."}, *QUESTION]
    plan = builder(1000).rag(messages, [hit(1, 0.8)], 10)
    assert [m["role"] for m in plan.messages] == ["system", "user"]
    system = plan.messages[0]["content"]
    assert system.startswith(RAG_INSTRUCTIONS)
    assert system.endswith("\n</context>\n\nAnswer in French.")


@pytest.mark.parametrize(
    ("route", "evidence", "first"),
    [
        ("rag", (hit(1, 0.8),), RAG_INSTRUCTIONS),
        ("rag", (), NO_EVIDENCE_INSTRUCTIONS),
        ("adapter+rag", (hit(1, 0.8),), RAG_INSTRUCTIONS),
        ("adapter", (), None),
        ("base", (), None),
    ],
)
def test_the_prompt_follows_the_plan(
    route: str, evidence: tuple[SearchHit, ...], first: str | None
) -> None:
    plan = RoutePlan(route, None, "why", evidence=evidence, answer=AnswerBound(16))  # type: ignore[arg-type]
    prompt = builder(1000).for_plan(QUESTION, plan)
    if first is None:
        assert prompt.messages == QUESTION
    else:
        assert prompt.messages[0]["content"].startswith(first)
    assert len(prompt.passages) == len(evidence)


def test_the_answer_bound_of_the_plan_is_kept_free() -> None:
    plan = RoutePlan("adapter", "x", "why", answer=AnswerBound(95))
    with pytest.raises(ContextLengthError):
        builder(100).for_plan(QUESTION, plan)  # 9 + 95 > 100
    assert builder(104).for_plan(QUESTION, plan).prompt_tokens == 9


def test_the_factory_asks_the_context_length_once() -> None:
    asked: list[int] = []

    async def context_length() -> int:
        asked.append(1)
        return 321

    async def twice() -> tuple[PromptBuilder, PromptBuilder]:
        prompts = PromptFactory(FakeTokenizer(), context_length)
        return await prompts.builder(), await prompts.builder()

    first, second = anyio.run(twice)
    assert first is second
    assert first.context_length == 321
    assert asked == [1]
