"""The retrieval query of a conversation, without a model call: a user turn that finds a passage
close enough on its own (`TurnWeighting.standalone_similarity`) is searched alone; a follow-up
that does not ("And how do I turn that off?") is searched together with the last turn before it
that does, and the follow-ups between.
A turn that finds no evidence but names things the documents never mention ("What should I
cook for dinner tonight?") has a topic of its own, and stands alone as well.

One user turn gives exactly the query of that turn alone (its text, `Embedder.embed_query`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ragtune.retrieval.embedder import Embedder, Vector
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.lexical import names_anything
from ragtune.retrieval.search import Retriever, SearchHit, SearchMode

Closest = Callable[[Vector], float]
"""The dense similarity of the collection's chunk closest to a vector (0.0 when none is)."""
UnknownWords = Callable[[str], frozenset[str]]
"""The words of a text that no chunk of the collection uses (`LexicalIndex.unknown_words`)."""


@dataclass(frozen=True)
class TurnWeighting:
    """Which user turns a conversation's query reads, and how much each counts.

    Measured on both developers' sets (`bench/conversation.py`): a follow-up searched alone
    almost never finds its topic; reading every question with the turns before it costs topic
    switches (Python FAQ recall@5 0.85 -> 0.66); reading the earlier turns only for a last turn
    that finds no passage close enough on its own keeps the gain at little cost (telling them
    apart by the turn's words instead, three words outside a stop list, lost 0.04 of recall@5
    on switches and 0.11 on follow-ups). Among the turns read, a follow-up's own words carry
    little of its topic: weighing the last turn more finds the topic less often, and below the
    evidence threshold."""

    turns: int = 3
    """At most this many user turns are read, the last one included (1: the last alone): the
    turn that stands alone and the last follow-ups after it."""
    lookback: int = 8
    """How many user turns back (the last one included; `turns` at least) the turn a run of
    follow-ups continues is looked for; none found: the last `turns` are read."""
    standalone_similarity: float = 0.41
    """A turn whose closest chunk is at least this similar stands alone (unless it names
    nothing, `nameless_alone`): as the last turn it is
    searched alone; before it, the reading stops there. Above the router's evidence threshold
    (0.37): a follow-up often finds a passage that barely passes on its own words ("Is it
    thread safe?", "And how do I turn that off?" matching a "To disable ..." passage), and is
    better read with its topic. Measured on both developers' sets (`bench/conversation.py`):
    from 0.37 to 0.41, SQLite's follow-ups gain (recall@5 0.728 -> 0.864; three in a row 0.407
    -> 0.889) and Python's other phrasings (0.655 -> 0.730), for two Python topic switches of
    174 (0.862 -> 0.851); 0.43 and 0.45 cost one more switch, 0.45 also two runs of three
    follow-ups and two switches followed by a follow-up."""
    nameless_alone: bool = False
    """Whether a turn that names nothing (`lexical.names_anything`: "and?", "why not?",
    "Could you elaborate?") may stand alone by `standalone_similarity`. It finds whatever chunk
    is shortest: "and?" came within 0.57 of a chunk reading "Or," on the SQLite docs, and its
    topic was dropped for it. True: as before 2026-12-07 (`bench/conversation.py` compares)."""
    decay: float = 1.0
    """The weight of each turn read relative to the one after it in the query vector."""
    anchor_weight: bool = True
    """The turn that stands alone weighs as much as the follow-ups read after it together (their
    weights summed), so that a run of follow-ups (which name little of their topic) does not
    dilute the topic; False: it weighs by `decay` as the others."""
    own_topic_words: int = 2
    """A turn that names at least this many words no chunk uses (numbers and codes aside) has a
    topic of its own even when it finds no evidence ("What should I cook for dinner tonight?"):
    it stands alone, so it is neither read with the question before it nor that question with
    a follow-up after it. A follow-up names little of anything; one unknown word may be a typo,
    a synonym the documents do not use or a word in passing (a known word with two letters
    swapped is not unknown: `lexical.swapped_from`). Counted only in a collection large enough
    to know everyday words (`OWN_TOPIC_VOCABULARY`). 0: off."""


OWN_TOPIC_VOCABULARY = 2_000
"""The distinct words (`LexicalIndex.vocabulary`) a collection's chunks use before a word they
lack says anything (`TurnWeighting.own_topic_words`): a smaller collection lacks everyday words
too ("undo", "laptop"). Measured on both developers' sets over 600 random sets of whole
documents each (`naming_words`): of 40 follow-ups written blind (`bench/conversation.py`'s
`BLIND_FOLLOW_UPS`), 19-22% would have counted as a topic of their own at 500-1,000 words,
6-9% at 1,000-1,500, 4% at 1,500-2,000, 1% at 2,000-3,000 and at most 0.1% from 3,000 (of the
bench's six follow-ups, 4-6% at 500-1,000 and at most 1% from 1,000); the small talk counted
falls as the vocabulary grows, from 71-92% under 1,000 words to 28-76% from 3,000."""
LAST_TURN_ONLY = TurnWeighting(turns=1)
"""Retrieval on the last user turn alone."""
DEFAULT_WEIGHTING = TurnWeighting()


@dataclass(frozen=True)
class ConversationQuery:
    """What a conversation is searched with."""

    texts: tuple[str, ...]
    """The user turns read, oldest first (one: the last turn alone)."""
    vector: Vector
    """Dense retrieval's and adapter matching's vector: the normalised weighted sum of the
    embeddings of the turns read (one turn: its embedding)."""
    model: str
    """The embedding model `vector` is of (`Embedder.model_id`)."""
    weights: tuple[float, ...] = (1.0,)
    """Each turn read's weight in `vector`."""

    @property
    def text(self) -> str:
        """The text the lexical index reads: the turns read, oldest first."""
        return "\n".join(self.texts)

    @property
    def turns(self) -> int:
        """User turns read (1: the last one alone)."""
        return len(self.texts)

    def vector_of(self, embedder: Embedder) -> Vector:
        """The query's vector by `embedder`: `vector` when it is of the same model, else the
        turns read embedded again one by one and combined as `vector` was (their joined text
        would be cut at the model's input size, losing the last turn behind a long one)."""
        if embedder.model_id == self.model:
            return self.vector
        if len(self.texts) == 1:
            return embedder.embed_query(self.texts[0])
        return _combined(embedder.embed_queries(self.texts), self.weights)


def user_turns(messages: Iterable[tuple[str, str]]) -> list[str]:
    """The texts of the user messages with text, oldest first, from (role, text) pairs."""
    return [text for role, text in messages if role == "user" and text.strip()]


def conversation_query(
    turns: Sequence[str],
    embedder: Embedder,
    closest: Closest | None,
    weighting: TurnWeighting = DEFAULT_WEIGHTING,
    unknown: UnknownWords | None = None,
) -> ConversationQuery:
    """The query of a conversation's user turns (oldest first; turns without text skipped).

    `closest` tells which turns stand alone (None: no documents to tell by, and the last turn
    is read alone); so does `unknown`, when given, for a turn with a topic of its own
    (`own_topic_words`). A last turn that does not stand alone is read with the last turn
    before it that does (up to `lookback` turns back) and the follow-ups between them, `turns`
    at most: a run of follow-ups keeps its topic however long it gets. The last `turns` are
    embedded in one batch, earlier ones only when none of those stands alone. ValueError when
    no turn has text."""
    texts = [text for text in turns if text.strip()]
    if not texts:
        raise ValueError("a retrieval query needs a user turn with text")
    most = max(weighting.turns, 1)
    if len(texts) == 1 or closest is None or most == 1:
        return ConversationQuery((texts[-1],), embedder.embed_query(texts[-1]), embedder.model_id)
    # The last turns first (one batch); earlier ones only when none of those stands alone.
    looked = texts[-max(weighting.lookback, most) :]
    vectors = embedder.embed_queries(looked[-most:])
    anchor = None
    for back in range(1, len(looked) + 1):
        if back > len(vectors):
            vectors = embedder.embed_queries(looked[: len(looked) - len(vectors)]) + vectors
        if _own_topic(looked[-back], unknown, weighting) or (
            (weighting.nameless_alone or names_anything(looked[-back]))
            and closest(vectors[-back]) >= weighting.standalone_similarity
        ):
            anchor = back
            break
    if anchor == 1:
        return ConversationQuery((texts[-1],), vectors[-1], embedder.model_id)
    if anchor is None:  # nothing stands alone: the last turns
        read = list(range(len(looked) - min(most, len(looked)), len(looked)))
    else:  # the turn that stands alone, then the last follow-ups after it
        start = len(looked) - anchor
        read = [start, *range(max(start + 1, len(looked) - most + 1), len(looked))]
    chosen = tuple(looked[n] for n in read)
    weights = [weighting.decay**age for age in range(len(read) - 1, -1, -1)]
    if anchor is not None and weighting.anchor_weight:
        weights[0] = sum(weights[1:])
    offset = len(looked) - len(vectors)
    return ConversationQuery(
        chosen,
        _combined([vectors[n - offset] for n in read], weights),
        embedder.model_id,
        tuple(weights),
    )


def _own_topic(text: str, unknown: UnknownWords | None, weighting: TurnWeighting) -> bool:
    """Whether a turn names enough that the documents never mention to have a topic of its
    own."""
    least = weighting.own_topic_words
    return unknown is not None and least > 0 and len(unknown(text)) >= least


def _combined(vectors: Sequence[Vector], weights: Sequence[float]) -> Vector:
    """The normalised weighted sum of the turns' vectors."""
    combined = [
        sum(w * v[i] for w, v in zip(weights, vectors, strict=True))
        for i in range(len(vectors[-1]))
    ]
    norm = math.sqrt(sum(x * x for x in combined)) or 1.0
    return [x / norm for x in combined]


def conversation_searches(
    retriever: Retriever,
    embedder: Embedder,
    modes: Sequence[SearchMode],
    weighting: TurnWeighting = DEFAULT_WEIGHTING,
    filters: SearchFilter | None = None,
    neighbours: int = 0,
) -> list[tuple[str, Callable[[Sequence[str], int], list[SearchHit]]]]:
    """One search per mode of a conversation's user turns (oldest first) to a depth, each
    searching the query the chat path builds from them (`conversation_query` over the
    retriever's collection, as `weighting` says; one turn, a plain question, as it is): what
    every measurement of labelled conversations uses (`eval retrieval`, `tune embedder
    --dev-set`), so that it scores what the server serves."""
    closest, unknown = closest_in(retriever, filters), unknown_words_in([retriever])

    def searcher(mode: SearchMode) -> Callable[[Sequence[str], int], list[SearchHit]]:
        def run(turns: Sequence[str], depth: int) -> list[SearchHit]:
            query = conversation_query(turns, embedder, closest, weighting, unknown)
            return retriever.search(
                query.text, depth, mode, filters, neighbours, vector=query.vector
            )

        return run

    return [(mode.value, searcher(mode)) for mode in modes]


def closest_in(retriever: Retriever, filters: SearchFilter | None = None) -> Closest:
    """`Closest` over a retriever's collection, among the chunks `filters` let through."""

    def closest(vector: Vector) -> float:
        hits = retriever.search("", 1, SearchMode.DENSE, filters, vector=vector)
        return hits[0].similarity if hits else 0.0

    return closest


def unknown_words_in(
    retrievers: Sequence[Retriever], vocabulary: int = OWN_TOPIC_VOCABULARY
) -> UnknownWords | None:
    """`UnknownWords` over the retrievers' collections together: the words none of them uses
    (in all its chunks, whatever a search's filter: a word used only outside the filter is
    known, and the turn read as before). None when none of them uses `vocabulary` distinct
    words or more: too few to tell a topic of its own from everyday words they happen to lack
    (a smaller one searched with a larger one still knows the words it uses)."""
    if not retrievers or max(r.lexical().vocabulary for r in retrievers) < vocabulary:
        return None

    def unknown(text: str) -> frozenset[str]:
        words = retrievers[0].lexical().unknown_words(text)
        for retriever in retrievers[1:]:
            words &= retriever.lexical().unknown_words(text)
        return words

    return unknown
