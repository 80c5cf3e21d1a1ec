"""Retrieval evaluation on question/answer sets, with the developers' relevance rule.

The rule (`../shared/eval/README.md`): normalise text by lowercasing and taking words as
`[a-z0-9_]+`; a retrieved chunk is relevant to a question when at least half of the chunk's
distinct word 5-grams occur in the answer passage, or at least half of the answer passage's
distinct word 5-grams occur in the chunk. A chunk of fewer than 5 words is never relevant.
Metrics: Recall@k (any relevant chunk in the top k), MRR@10 and nDCG@10 with binary gains, and
the ceiling: questions with a relevant chunk anywhere in the collection.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.retrieval.conversation import user_turns
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.search import SearchHit
from ragtune.retrieval.store import Collection

_SURROGATE = re.compile("[\ud800-\udfff]")

_WORD = re.compile(r"[a-z0-9_]+")
NGRAM = 5
CUTOFF = 10  # MRR@10 and nDCG@10


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int = NGRAM) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def is_relevant(chunk: str, answer: str) -> bool:
    """The relevance rule for one chunk and one answer passage."""
    chunk_words = words(chunk)
    if len(chunk_words) < NGRAM:
        return False
    chunk_grams, answer_grams = ngrams(chunk_words), ngrams(words(answer))
    if not answer_grams:
        return False
    shared = len(chunk_grams & answer_grams)
    return 2 * shared >= len(chunk_grams) or 2 * shared >= len(answer_grams)


@dataclass(frozen=True)
class QAItem:
    id: str
    question: str
    """What the item asks: the question, or the conversation's last user turn with text."""
    answer_passage: str
    source: str = ""
    history: tuple[str, ...] = ()
    """The conversation's earlier user turns with text, oldest first (items given as
    `messages`); empty for a plain question."""

    @property
    def turns(self) -> tuple[str, ...]:
        """The user turns, oldest first: what a conversation-aware search reads."""
        return (*self.history, self.question)


QA_FORMAT = (
    'a JSON list of {"id", "question" or "messages", "answer_passage", "source"}, "messages" '
    'being a conversation as OpenAI\'s chat API takes it: [{"role": "user", "content": "..."}, ...]'
)


def load_qa(path: Path) -> list[QAItem]:
    """The items of a QA file; a bad item is an error that names it."""
    try:
        # utf-8-sig: a byte-order mark (as some Windows editors save) is read past, as ingest does.
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise RetrievalError(f"no such QA file: {path}") from None
    except (OSError, ValueError) as exc:
        raise RetrievalError(
            f"{path} is not a QA file: expected {QA_FORMAT} ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(data, list):
        raise RetrievalError(f"{path} is not a QA file: expected {QA_FORMAT}")
    items = [_qa_item(raw, f"{path}, item {n}") for n, raw in enumerate(data)]
    if not items:
        raise RetrievalError(f"{path} holds no questions")
    return items


def _qa_item(raw: object, where: str) -> QAItem:
    if not isinstance(raw, dict):
        raise RetrievalError(f"{where}: not a JSON object; expected {QA_FORMAT}")
    missing = [key for key in ("id", "answer_passage") if key not in raw]
    if missing:
        raise RetrievalError(f"{where}: {missing[0]!r} is missing; expected {QA_FORMAT}")
    where = f"{where} (id {raw['id']!r})"
    answer = raw["answer_passage"]
    if not isinstance(answer, str):
        raise RetrievalError(f"{where}: answer_passage is not a string")
    _check_text(answer, f"{where}: answer_passage")
    question, messages = raw.get("question"), raw.get("messages")
    if (question is None) == (messages is None):
        raise RetrievalError(f'{where}: give either "question" or "messages", not both or neither')
    if question is not None:
        if not isinstance(question, str) or not question.strip():
            raise RetrievalError(f"{where}: question is not a text")
        _check_text(question, f"{where}: question")
        turns = [question]
    else:
        turns = user_turns(_messages(messages, where))
        if not turns:
            raise RetrievalError(f"{where}: messages hold no user message with text")
    _check_answer_given(answer, where)
    return QAItem(str(raw["id"]), turns[-1], answer, str(raw.get("source", "")), tuple(turns[:-1]))


def _check_answer_given(answer: str, where: str) -> None:
    """An error for an empty answer: nothing can ever be found relevant to it."""
    if not answer.strip():
        raise RetrievalError(
            f"{where}: answer_passage is empty: give the passage that answers the question "
            f"(at least {NGRAM} words, as the rule matches word {NGRAM}-grams) or leave the item "
            "out"
        )


def too_short(items: Sequence[QAItem]) -> list[str]:
    """The ids of the items whose answer has fewer words than the rule's n-grams, as the rule
    reads words (`words`: runs of a-z, 0-9 and _): no chunk can be relevant to them, so they
    score 0 whatever is searched (the ceiling shows them too)."""
    return [item.id for item in items if len(words(item.answer_passage)) < NGRAM]


def _messages(messages: object, where: str) -> list[tuple[str, str]]:
    """(role, text) of each message: its content, or the text of its text parts."""
    if not isinstance(messages, list):
        raise RetrievalError(f"{where}: messages is not a list of messages")
    pairs = []
    for n, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(role, str):
            raise RetrievalError(
                f'{where}: messages[{n}] is not a message: expected {{"role", "content"}}'
            )
        if role not in ROLES:
            raise RetrievalError(
                f"{where}: messages[{n}].role is {role[:40]!r}: expected one of "
                f"{', '.join(ROLES)} (as the chat API takes them)"
            )
        if isinstance(content, list):
            content = "\n".join(
                _text_part(part, f"{where}: messages[{n}].content[{m}]")
                for m, part in enumerate(content)
            )
        elif content is not None and not isinstance(content, str):
            raise RetrievalError(
                f"{where}: messages[{n}].content is neither a text nor a list of parts"
            )
        _check_text(content or "", f"{where}: messages[{n}].content")
        pairs.append((role, content or ""))
    return pairs


ROLES = ("system", "developer", "user", "assistant", "tool")
"""The roles of a conversation's messages, as the chat API takes them."""


def _text_part(part: object, where: str) -> str:
    """The text of a content part; an error for a part that is not text (search reads text)."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind != "text":
        raise RetrievalError(
            f"{where} is {'an ' + repr(str(kind)[:40]) + ' part' if kind else 'not a part'}: "
            'retrieval reads text only; give {"type": "text", "text": "..."} parts'
        )
    text = part.get("text") if isinstance(part, dict) else None
    if text is None:  # no text, or null: an empty part, as the chat API reads it
        return ""
    if not isinstance(text, str):
        raise RetrievalError(f"{where}.text is not a text")
    return text


def _check_text(text: str, where: str) -> None:
    """An error for text no tokenizer can encode (an unpaired UTF-16 surrogate, which JSON's
    escapes can write)."""
    if _SURROGATE.search(text):
        raise RetrievalError(
            f"{where} holds an unpaired UTF-16 surrogate (an invalid character); write valid "
            "Unicode text"
        )


class RelevanceJudge:
    """Judges chunks against every question at once (an inverted index of answer 5-grams)."""

    def __init__(self, qa: Sequence[QAItem]) -> None:
        self.answer_sizes = [len(ngrams(words(item.answer_passage))) for item in qa]
        self._index: dict[tuple[str, ...], list[int]] = defaultdict(list)
        for n, item in enumerate(qa):
            for gram in ngrams(words(item.answer_passage)):
                self._index[gram].append(n)

    def relevant_to(self, chunk: str) -> set[int]:
        """Indexes of the questions `chunk` is relevant to."""
        chunk_words = words(chunk)
        if len(chunk_words) < NGRAM:
            return set()
        grams = ngrams(chunk_words)
        shared = Counter(q for gram in grams for q in self._index.get(gram, ()))
        return {
            q
            for q, count in shared.items()
            if 2 * count >= len(grams) or 2 * count >= self.answer_sizes[q]
        }


def recall_at(flags: Sequence[bool], k: int) -> float:
    return 1.0 if any(flags[:k]) else 0.0


def reciprocal_rank(flags: Sequence[bool], cutoff: int = CUTOFF) -> float:
    for rank, flag in enumerate(flags[:cutoff], start=1):
        if flag:
            return 1.0 / rank
    return 0.0


def ndcg(flags: Sequence[bool], relevant_total: int, cutoff: int = CUTOFF) -> float:
    """Binary-gain nDCG; the ideal ranking puts all `relevant_total` relevant chunks first (or
    as many as the ranking holds, when it holds more: hits judged on their neighbours' text
    too, `eval retrieval --neighbours`, can be relevant where no chunk alone is; nDCG stays at
    most 1)."""
    relevant = max(relevant_total, sum(1 for flag in flags[:cutoff] if flag))
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(relevant, cutoff) + 1))
    if ideal == 0:
        return 0.0
    gained = sum(1.0 / math.log2(rank + 1) for rank, f in enumerate(flags[:cutoff], 1) if f)
    return gained / ideal


@dataclass
class ModeReport:
    mode: str
    metrics: dict[str, float]
    runs: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RetrievalReport:
    collection: str
    chunks: int
    questions: int
    ceiling: int
    """Questions with at least one relevant chunk in the collection."""
    modes: list[ModeReport]

    def to_dict(self, with_runs: bool = False) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "chunks": self.chunks,
            "questions": self.questions,
            "ceiling": self.ceiling,
            "modes": {
                m.mode: ({"metrics": m.metrics, "runs": m.runs} if with_runs else m.metrics)
                for m in self.modes
            },
        }


Search = Callable[[str, int], list[SearchHit]]
"""A query text and a depth -> the ranked hits."""
ConversationSearch = Callable[[Sequence[str], int], list[SearchHit]]
"""A conversation's user turns (oldest first; one for a plain question) and a depth -> the
ranked hits."""


def evaluate(
    collection: Collection,
    qa: Sequence[QAItem],
    searches: Iterable[tuple[str, Search]],
    ks: Sequence[int] = (1, 5, 10),
) -> RetrievalReport:
    """The metrics of each search, given each item's question (a conversation's last user
    turn) alone."""
    return evaluate_conversations(
        collection, qa, [(mode, _on_last_turn(search)) for mode, search in searches], ks
    )


def _on_last_turn(search: Search) -> ConversationSearch:
    return lambda turns, depth: search(turns[-1], depth)


def evaluate_conversations(
    collection: Collection,
    qa: Sequence[QAItem],
    searches: Iterable[tuple[str, ConversationSearch]],
    ks: Sequence[int] = (1, 5, 10),
) -> RetrievalReport:
    """The metrics of each search, given each item's user turns (`QAItem.turns`)."""
    judge = RelevanceJudge(qa)
    totals = [0] * len(qa)
    chunks = 0
    for chunk in collection.scan(with_text=True):
        chunks += 1
        for q in judge.relevant_to(chunk.text or ""):
            totals[q] += 1
    depth = max(*ks, CUTOFF)
    reports = []
    for mode, search in searches:
        sums: dict[str, float] = defaultdict(float)
        runs = []
        for n, item in enumerate(qa):
            hits = search(item.turns, depth)
            flags = [n in judge.relevant_to(h.context or h.text) for h in hits]
            for k in ks:
                sums[f"recall@{k}"] += recall_at(flags, k)
            sums[f"mrr@{CUTOFF}"] += reciprocal_rank(flags)
            sums[f"ndcg@{CUTOFF}"] += ndcg(flags, totals[n])
            runs.append(
                {
                    "id": item.id,
                    "question": item.question,
                    **({"history": list(item.history)} if item.history else {}),
                    "relevant_in_collection": totals[n],
                    "hits": [
                        {
                            "rank": h.rank,
                            "chunk_id": h.chunk_id,
                            "source": h.source,
                            "section": h.section,
                            "text": h.context or h.text,
                            "relevant": flag,
                            "score": h.score,
                            "dense_score": h.dense_score,
                            "dense_rank": h.dense_rank,
                            "lexical_score": h.lexical_score,
                            "lexical_rank": h.lexical_rank,
                            "rerank_score": h.rerank_score,
                        }
                        for h, flag in zip(hits, flags, strict=True)
                    ],
                }
            )
        metrics = {name: value / len(qa) for name, value in sums.items()}
        reports.append(ModeReport(mode, metrics, runs))
    ceiling = sum(1 for t in totals if t > 0)
    return RetrievalReport(collection.name, chunks, len(qa), ceiling, reports)
