"""A conversation's retrieval query: one turn as before, a follow-up with the question it
follows, a new question alone (the fake embedder, words shared: vectors close; two passages in
the in-memory store tell which turns find evidence on their own)."""

from __future__ import annotations

from collections.abc import Container
from pathlib import Path
from typing import Any

import pytest

from ragtune.retrieval import lexical
from ragtune.retrieval.conversation import (
    DEFAULT_WEIGHTING,
    LAST_TURN_ONLY,
    Closest,
    TurnWeighting,
    closest_in,
    conversation_query,
    unknown_words_in,
    user_turns,
)
from ragtune.retrieval.embedder import Vector
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.search import Retriever
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord
from tests.support.fakes import FakeEmbedder, InMemoryStore

REFUNDS = "Within how many days are invoices refunded after a refund request?"
HOLIDAYS = "Is the office closed on public holidays and at weekends?"
FOLLOW_UP = "And how do I turn that off?"
PASSAGES = {
    "refunds.md": "Invoices are refunded within thirty days of the refund request.",
    "office.md": "The office is closed on public holidays and at weekends.",
}


def cosine(a: Vector, b: Vector) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


@pytest.fixture
def embedder() -> FakeEmbedder:
    return FakeEmbedder()


@pytest.fixture
def retriever(tmp_path: Path, embedder: FakeEmbedder) -> Retriever:
    store = InMemoryStore()
    collection = store.collection("policies", embedder.model_id, create=True)
    collection.add(
        [
            ChunkRecord(name, text, {"source": name, "doc_id": name}, embedder.embed([text])[0])
            for name, text in PASSAGES.items()
        ]
    )
    settings = RetrievalSettings(data_dir=tmp_path)
    return Retriever(collection, embedder, LexicalIndexes.for_store(tmp_path, store), settings)


@pytest.fixture
def closest(retriever: Retriever) -> Closest:
    return closest_in(retriever)


def never_asked(vector: Vector) -> float:
    raise AssertionError("one turn needs no telling")


@pytest.mark.parametrize("turns", [[REFUNDS], ["", REFUNDS, "  \n"], [FOLLOW_UP], [" why? "]])
def test_one_turn_is_searched_exactly_as_the_turn_alone(
    turns: list[str], embedder: FakeEmbedder
) -> None:
    (text,) = [t for t in turns if t.strip()]
    query = conversation_query(turns, embedder, never_asked)
    assert (query.text, query.vector, query.turns) == (text, embedder.embed_query(text), 1)


def test_closest_is_the_similarity_of_the_closest_chunk(
    retriever: Retriever, embedder: FakeEmbedder, closest: Closest
) -> None:
    office = embedder.embed_query(PASSAGES["office.md"])
    assert closest(office) == pytest.approx(1.0)
    assert closest(embedder.embed_query(REFUNDS)) >= DEFAULT_WEIGHTING.standalone_similarity
    assert closest(embedder.embed_query(FOLLOW_UP)) < DEFAULT_WEIGHTING.standalone_similarity
    refunds_only = closest_in(retriever, SearchFilter.parse(["source=refunds.md"]))
    assert refunds_only(office) < 0.5


def test_a_follow_up_is_searched_with_the_question_it_follows(
    embedder: FakeEmbedder, closest: Closest
) -> None:
    embedder.calls.clear()
    query = conversation_query([REFUNDS, FOLLOW_UP], embedder, closest)
    assert query.turns == 2
    assert embedder.calls == [2]  # both turns embedded in one batch
    assert query.text == f"{REFUNDS}\n{FOLLOW_UP}"  # the lexical index reads the topic too
    follow_up = embedder.embed_query(FOLLOW_UP)
    refund_passage = embedder.embed_query(PASSAGES["refunds.md"])
    assert cosine(query.vector, refund_passage) > DEFAULT_WEIGHTING.standalone_similarity
    assert cosine(follow_up, refund_passage) < 0.1
    assert cosine(query.vector, query.vector) == pytest.approx(1.0)


def test_a_question_that_finds_evidence_on_its_own_is_searched_alone(
    embedder: FakeEmbedder, closest: Closest
) -> None:
    query = conversation_query([REFUNDS, HOLIDAYS], embedder, closest)
    assert (query.text, query.vector, query.turns) == (
        HOLIDAYS,
        embedder.embed_query(HOLIDAYS),
        1,
    )


@pytest.mark.parametrize(
    ("similarity", "read"), [(0.39, (REFUNDS, FOLLOW_UP)), (0.41, (FOLLOW_UP,))]
)
def test_a_follow_up_that_barely_finds_evidence_is_read_with_its_topic(
    embedder: FakeEmbedder, similarity: float, read: tuple[str, ...]
) -> None:
    """A follow-up's own words may find a passage just past the router's evidence threshold
    (0.37); below `standalone_similarity` (0.41) it is still read with its topic."""
    known = {
        tuple(embedder.embed_query(REFUNDS)): 0.8,
        tuple(embedder.embed_query(FOLLOW_UP)): similarity,
    }

    def closest(vector: Vector) -> float:
        return known[tuple(vector)]

    assert conversation_query([REFUNDS, FOLLOW_UP], embedder, closest).texts == read
    at_evidence = TurnWeighting(standalone_similarity=0.37)
    assert conversation_query([REFUNDS, FOLLOW_UP], embedder, closest, at_evidence).texts == (
        FOLLOW_UP,
    )


@pytest.mark.parametrize("follow_up", ["and?", "?", "Why not?", "Could you elaborate?", "\u200b"])
def test_a_turn_that_names_nothing_never_stands_alone(
    embedder: FakeEmbedder, follow_up: str
) -> None:
    """A turn of stop words, chat words or punctuation alone found a chunk of a word or two
    ("Or,") close enough to stand alone (0.5 and more with MiniLM on the SQLite docs): its
    topic was dropped and the route took that chunk for evidence. It is read with its topic
    however close its closest chunk, and a turn that names something still stands alone."""

    def everything_close(vector: Vector) -> float:
        return 0.9

    query = conversation_query([REFUNDS, follow_up], embedder, everything_close)
    assert query.texts == (REFUNDS, follow_up)
    chain = conversation_query([REFUNDS, "?", follow_up], embedder, everything_close)
    assert chain.texts == (REFUNDS, "?", follow_up)  # nor does one in between
    for named in ("WAL?", "sqlite3_open_v2?"):
        alone = conversation_query([REFUNDS, named], embedder, everything_close)
        assert alone.texts == (named,)
    before = TurnWeighting(nameless_alone=True)
    assert conversation_query([REFUNDS, follow_up], embedder, everything_close, before).texts == (
        follow_up,
    )


def test_a_follow_up_reads_back_to_the_last_turn_that_stands_alone(
    embedder: FakeEmbedder, closest: Closest
) -> None:
    query = conversation_query([HOLIDAYS, REFUNDS, FOLLOW_UP], embedder, closest)
    assert query.text == f"{REFUNDS}\n{FOLLOW_UP}"
    chain = [REFUNDS, "Why?", "Could you elaborate?", FOLLOW_UP]
    # Three turns at most: the topic and the last follow-ups (a third follow-up in a row still
    # finds its topic).
    query = conversation_query(chain, embedder, closest)
    assert query.texts == (REFUNDS, "Could you elaborate?", FOLLOW_UP)
    assert query.text == "\n".join(query.texts)
    # The topic weighs as much as the follow-ups after it together: they do not dilute it.
    assert query.weights == (2.0, 1.0, 1.0)
    topic = embedder.embed_query(PASSAGES["refunds.md"])
    even = conversation_query(chain, embedder, closest, TurnWeighting(anchor_weight=False))
    assert even.weights == (1.0, 1.0, 1.0)
    assert cosine(query.vector, topic) > cosine(even.vector, topic)
    longer = TurnWeighting(turns=5)
    assert conversation_query(chain, embedder, closest, longer).text == "\n".join(chain)
    # The topic is looked for `lookback` turns back at most; none found, the last turns.
    many = [REFUNDS, *(f"Why {n}?" for n in range(6)), FOLLOW_UP]  # 8 turns
    assert conversation_query(many, embedder, closest).texts == (REFUNDS, "Why 5?", FOLLOW_UP)
    short = TurnWeighting(lookback=4)
    assert conversation_query(many, embedder, closest, short).texts == tuple(many[-3:])
    assert conversation_query(many[1:], embedder, closest).texts == tuple(many[-3:])


def test_earlier_turns_are_embedded_only_when_the_last_ones_need_them(
    embedder: FakeEmbedder, closest: Closest
) -> None:
    embedder.calls.clear()
    conversation_query([HOLIDAYS, "Why 1?", REFUNDS, FOLLOW_UP], embedder, closest)
    assert embedder.calls == [3]  # the topic is among the last three
    embedder.calls.clear()
    conversation_query([REFUNDS, "Why 1?", "Why 2?", FOLLOW_UP], embedder, closest)
    assert embedder.calls == [3, 1]


SMALL_TALK = "What should I cook for dinner tonight with chicken and rice?"
UNKNOWN = {SMALL_TALK: frozenset({"cook", "dinner", "chicken", "rice"})}


def unknown(text: str) -> frozenset[str]:
    """Words no chunk uses, as a large collection would find them: small talk's, and one word of
    a follow-up (a word in passing)."""
    return UNKNOWN.get(text, frozenset({"caveat"}))


def test_a_turn_that_names_what_the_documents_never_mention_is_searched_alone(
    embedder: FakeEmbedder, closest: Closest
) -> None:
    """Small talk after a question finds no evidence either; it is not read with the question
    (whose passages would reach its prompt), nor the question with a follow-up of it."""
    query = conversation_query([REFUNDS, SMALL_TALK], embedder, closest, unknown=unknown)
    assert (query.texts, query.vector) == ((SMALL_TALK,), embedder.embed_query(SMALL_TALK))
    query = conversation_query([REFUNDS, SMALL_TALK, FOLLOW_UP], embedder, closest, unknown=unknown)
    assert query.texts == (SMALL_TALK, FOLLOW_UP)
    # A follow-up with one word the documents lack is still a follow-up.
    query = conversation_query([REFUNDS, FOLLOW_UP], embedder, closest, unknown=unknown)
    assert query.texts == (REFUNDS, FOLLOW_UP)
    # Without the rule (or with no words to tell by), the small talk is read with the question.
    off = TurnWeighting(own_topic_words=0)
    for weighting, words in ((off, unknown), (DEFAULT_WEIGHTING, None)):
        query = conversation_query([REFUNDS, SMALL_TALK], embedder, closest, weighting, words)
        assert query.texts == (REFUNDS, SMALL_TALK)
    fussy = TurnWeighting(own_topic_words=1)
    query = conversation_query([REFUNDS, FOLLOW_UP], embedder, closest, fussy, unknown)
    assert query.texts == (FOLLOW_UP,)


def retriever_over(path: Path, embedder: FakeEmbedder, name: str, texts: list[str]) -> Retriever:
    """A retriever over a new collection of these chunks."""
    store = InMemoryStore()
    collection = store.collection(name, embedder.model_id, create=True)
    collection.add(
        [
            ChunkRecord(f"{name}-{n}", t, {"doc_id": name}, embedder.embed([t])[0])
            for n, t in enumerate(texts)
        ]
    )
    indexes = LexicalIndexes.for_store(path, store)
    return Retriever(collection, embedder, indexes, RetrievalSettings(data_dir=path))


def test_unknown_words_are_the_words_no_chunk_uses_in_a_collection_large_enough(
    retriever: Retriever, tmp_path: Path, embedder: FakeEmbedder
) -> None:
    text = "Thanks! Tell me about refunded invoices, cats and error 0x80070005 in my_var, sorry"
    unknown = unknown_words_in([retriever], vocabulary=0)
    assert unknown is not None
    # Stemmed as the index reads them; known words, codes, stop words and courtesy left out.
    assert unknown(text) == {"cat", "tell", "error"}
    assert unknown("i dont see it, whats that? im lost") == {"see", "lost"}  # no apostrophes
    # Two passages use too few words to tell a topic from everyday words they lack.
    assert retriever.lexical().vocabulary == 11  # invoic refund within thirti day request offic ...
    assert unknown_words_in([retriever]) is None
    assert unknown_words_in([]) is None
    # Searched with a collection that can tell, a smaller one still knows the words it uses.
    small = retriever_over(tmp_path / "small", embedder, "canteen", ["Lunch is at noon."])
    assert unknown_words_in([small], vocabulary=11) is None
    both = unknown_words_in([retriever, small], vocabulary=11)
    assert both is not None
    assert both("Tell me about lunch at noon with cats") == {"tell", "cat"}
    nothing = retriever_over(tmp_path / "empty", embedder, "empty", [])
    assert unknown_words_in([nothing], vocabulary=0)(text) == frozenset()  # type: ignore[misc]


def test_a_known_word_with_two_letters_swapped_is_known(
    retriever: Retriever, embedder: FakeEmbedder, closest: Closest
) -> None:
    """The commonest slip of typing does not make a follow-up a topic of its own."""
    unknown = unknown_words_in([retriever], vocabulary=0)
    assert unknown is not None
    # refunded, within, thirty, days and (a stop word) that, each with two letters swapped.
    assert unknown("Refnuded wihtin thrity dyas, taht is?") == frozenset()
    # Not: a word of three letters, two swaps, a letter left out, or a word it does not know.
    assert unknown("dya, rfenuded, refnded, cats") == {"dya", "rfenud", "refnd", "cat"}
    # A swap onto a stem the stop list keeps of a contraction ("hadn") is a real word.
    assert unknown("hand") == {"hand"}
    follow_up = "Are tehy refnuded by cheque?"  # one word the documents lack: cheque
    query = conversation_query([REFUNDS, follow_up], embedder, closest, unknown=unknown)
    assert query.texts == (REFUNDS, follow_up)


class NoStemmer:
    def stemWord(self, word: str) -> str:
        raise AssertionError("a swap of a long word was stemmed")


def test_swaps_are_tried_for_a_bounded_number_of_words_of_bounded_length(
    retriever: Retriever, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each swap of a word costs a stem: a pasted sequence of thousands of letters, or a
    message of thousands of words, must not cost its length squared."""
    assert not lexical.swapped_from("acgt" * 3000, set(), NoStemmer())
    tried: list[str] = []
    real = lexical.swapped_from

    def counted(word: str, known: Container[str], stemmer: Any) -> bool:
        tried.append(word)
        return real(word, known, stemmer)

    monkeypatch.setattr(lexical, "swapped_from", counted)
    words = [f"zq{chr(97 + n % 26)}{chr(97 + n // 26)}x" for n in range(200)]
    assert len(retriever.lexical().unknown_words(" ".join(words * 2))) == 200
    assert len(tried) == lexical.SWAPS_TRIED


def test_the_vocabulary_that_tells_counts_words_not_numbers_or_codes(
    tmp_path: Path, embedder: FakeEmbedder
) -> None:
    """A log-like collection with thousands of codes knows few words: it cannot tell."""
    lines = [f"error 0x{n:04x} at step_{n} after {n} ms" for n in range(50)]
    retriever = retriever_over(tmp_path, embedder, "logs", lines)
    assert retriever.lexical().vocabulary == 3  # error, after, ms (of 143 entries)
    assert unknown_words_in([retriever], vocabulary=4) is None


def test_without_documents_to_tell_by_the_last_turn_is_searched_alone(
    embedder: FakeEmbedder, closest: Closest
) -> None:
    for query in (
        conversation_query([REFUNDS, FOLLOW_UP], embedder, None),
        conversation_query([REFUNDS, FOLLOW_UP], embedder, closest, LAST_TURN_ONLY),
    ):
        assert (query.text, query.vector) == (FOLLOW_UP, embedder.embed_query(FOLLOW_UP))


def test_decaying_weights_lean_toward_the_last_turn() -> None:
    embedder = FakeEmbedder(dimension=1024)  # no two of these words share a component
    turns = ["What is the refund deadline?", "Tell me more.", "Could you elaborate?"]
    query = conversation_query(turns, embedder, lambda _: 0.0, TurnWeighting(decay=0.5))
    oldest, middle, last = embedder.embed_queries(turns)
    assert cosine(query.vector, last) > cosine(query.vector, middle) > cosine(query.vector, oldest)
    alike = conversation_query(turns, embedder, lambda _: 0.0)
    assert cosine(alike.vector, last) == pytest.approx(cosine(alike.vector, oldest))


def test_a_conversation_without_user_text_has_no_query(embedder: FakeEmbedder) -> None:
    with pytest.raises(ValueError, match="user turn with text"):
        conversation_query(["", "  "], embedder, None)


def test_user_turns_are_the_user_messages_with_text() -> None:
    messages = [
        ("system", "Be brief."),
        ("user", REFUNDS),
        ("assistant", "Within thirty days."),
        ("user", "   "),
        ("tool", "{}"),
        ("user", FOLLOW_UP),
    ]
    assert user_turns(messages) == [REFUNDS, FOLLOW_UP]


def test_another_model_embeds_the_turns_read_one_by_one(
    embedder: FakeEmbedder, closest: Closest
) -> None:
    """A collection re-embedded with another model (`tune embedder`) is searched with the
    conversation's turns embedded by that model and combined as before, not their joined text
    (which a model cuts at its input size: a long question would hide the follow-up)."""
    query = conversation_query([REFUNDS, FOLLOW_UP], embedder, closest)
    assert query.vector_of(embedder) is query.vector
    other = FakeEmbedder(dimension=128)
    vector = query.vector_of(other)
    assert other.calls == [2]
    topic, follow_up = other.embed_queries([REFUNDS, FOLLOW_UP])
    summed = [a + b for a, b in zip(topic, follow_up, strict=True)]
    norm = cosine(summed, summed) ** 0.5
    assert vector == pytest.approx([x / norm for x in summed])
    alone = conversation_query([REFUNDS, HOLIDAYS], embedder, closest)
    assert alone.vector_of(other) == other.embed_query(HOLIDAYS)
