"""The retrieval query of a conversation, without a model call: a user turn that finds evidence in
the documents on its own is searched alone; a follow-up that does not ("And how do I turn that
off?") is searched together with the turns before it, back to the last one that does.

One user turn gives exactly the query of that turn alone (its text, `Embedder.embed_query`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ragtune.retrieval.embedder import Embedder, Vector
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.search import Retriever, SearchMode

Closest = Callable[[Vector], float]
"""The dense similarity of the collection's chunk closest to a vector (0.0 when none is)."""


@dataclass(frozen=True)
class TurnWeighting:
    """Which user turns a conversation's query reads, and how much each counts.

    Measured on both developers' sets (`bench/conversation.py`): a follow-up searched alone
    almost never finds its topic; reading every question with the turns before it costs topic
    switches (Python FAQ recall@5 0.85 -> 0.66); reading the earlier turns only for a last turn
    that finds no evidence of its own keeps the whole gain and loses no switch (telling them
    apart by the turn's words instead, three words outside a stop list, lost 0.04 of recall@5
    on switches and 0.11 on follow-ups). Among the turns read, a follow-up's own words carry
    little of its topic: weighing the last turn more finds the topic less often, and below the
    evidence threshold."""

    turns: int = 3
    """At most this many user turns are read, the last one included (1: the last alone)."""
    standalone_similarity: float = 0.37
    """A turn whose closest chunk is at least this similar (the router's evidence threshold)
    stands alone: as the last turn it is searched alone; before it, the reading stops there."""
    decay: float = 1.0
    """The weight of each turn read relative to the one after it in the query vector."""


LAST_TURN_ONLY = TurnWeighting(turns=1)
"""Retrieval on the last user turn alone."""
DEFAULT_WEIGHTING = TurnWeighting()


@dataclass(frozen=True)
class ConversationQuery:
    """What a conversation is searched with."""

    text: str
    """The text the lexical index reads: the turns read, oldest first."""
    vector: Vector
    """Dense retrieval's and adapter matching's vector: the normalised weighted sum of the
    embeddings of the turns read."""
    turns: int
    """User turns read (1: the last one alone)."""
    model: str
    """The embedding model `vector` is of (`Embedder.model_id`)."""


def user_turns(messages: Iterable[tuple[str, str]]) -> list[str]:
    """The texts of the user messages with text, oldest first, from (role, text) pairs."""
    return [text for role, text in messages if role == "user" and text.strip()]


def conversation_query(
    turns: Sequence[str],
    embedder: Embedder,
    closest: Closest | None,
    weighting: TurnWeighting = DEFAULT_WEIGHTING,
) -> ConversationQuery:
    """The query of a conversation's user turns (oldest first; turns without text skipped).

    The turns that may be read are embedded in one batch; `closest` tells which of them stand
    alone (None: no documents to tell by, and the last turn is read alone). ValueError when no
    turn has text."""
    texts = [text for text in turns if text.strip()]
    if not texts:
        raise ValueError("a retrieval query needs a user turn with text")
    window = texts[-max(weighting.turns, 1) :]
    if len(window) == 1 or closest is None:
        return ConversationQuery(window[-1], embedder.embed_query(window[-1]), 1, embedder.model_id)
    vectors = embedder.embed_queries(window)
    read = 1
    while read < len(window) and closest(vectors[-read]) < weighting.standalone_similarity:
        read += 1
    if read == 1:
        return ConversationQuery(window[-1], vectors[-1], 1, embedder.model_id)
    weights = [weighting.decay**age for age in range(read - 1, -1, -1)]
    combined = [
        sum(w * v[i] for w, v in zip(weights, vectors[-read:], strict=True))
        for i in range(len(vectors[-1]))
    ]
    norm = math.sqrt(sum(x * x for x in combined)) or 1.0
    return ConversationQuery(
        "\n".join(window[-read:]), [x / norm for x in combined], read, embedder.model_id
    )


def closest_in(retriever: Retriever, filters: SearchFilter | None = None) -> Closest:
    """`Closest` over a retriever's collection, among the chunks `filters` let through."""

    def closest(vector: Vector) -> float:
        hits = retriever.search("", 1, SearchMode.DENSE, filters, vector=vector)
        return (hits[0].dense_score or 0.0) if hits else 0.0

    return closest
