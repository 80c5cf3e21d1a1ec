"""Checking an answer against the passages it was given: per sentence, how well the passages
it cites (or, citing none, the best of them) support it; summarised as a grounding score and
the sentences that are not supported.

Support, by default, needs no model beyond the embedding model: 0.7 x the cosine similarity of
the sentence to the closest sentence or pair of adjacent sentences of the passage (MiniLM; a
unit of the passage rather than all of it, so that a long passage does not dilute the one
sentence that says it) + 0.3 x the share of the sentence's content words (stemmed, stop words
left out) found in the passage. A sentence is supported at 0.6 and above.

Measured on built cases: 12 short passages on unrelated topics (a refund policy, reading files
in Python, SQLite, a router's manual, a treaty...), each with 3 supported sentences (1 copied,
2 paraphrased) and 3 unsupported ones (2 plausible claims on the same topic that the passage
does not make, 1 off topic); 8 passages to choose on (48 sentences), 4 written afterwards to
check the choice (24). Separating supported from unsupported sentences on the 48, against the
cited passage: AUC 0.974 for the blend, 0.976 for the cosine alone, 0.964 for the word overlap
alone, 0.840 for the cosine to the whole passage (the dilution units avoid). The threshold
chosen on the 48 (0.594, rounded to 0.6) classifies 0.938 of them right (0.90-0.92 when chosen
leaving each passage out in turn) and all 24 held out, compared with the cited passage or with
every passage; over the 72, 0.958 (AUC 0.985), where the cosine alone does 0.944 at its best
threshold. Mean support: copied 1.00, paraphrased 0.76, absent claims 0.46, off topic 0.04.
So the blend does as well as the cosine alone here, within a sentence or two: the word overlap
is kept, at a weight that leaves the measured separation intact, for what a small embedding
model blurs (names, numbers, identifiers), not for a gain measured here. Neither part tells a
sentence that changes one detail of the passage (ninety days for thirty, Monday for Sunday):
12 such sentences scored 0.87 on average, all above the threshold. That takes an NLI model:
set `RAGTUNE_GROUNDING_MODEL` to a local CrossEncoder folder trained for entailment (MNLI/SNLI
labels); its entailment probability is then the support, and 0.5 the threshold. (Only that it
is used and its labels read right is tested here, not its quality.)
"""

from __future__ import annotations

import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel

from ragtune.ingest.loaders import code_spans
from ragtune.retrieval.embedder import Embedder
from ragtune.retrieval.rerank import CrossEncoderSetting
from ragtune.serving.errors import GroundingModelError
from ragtune.serving.settings import GroundingSettings

Method = Literal["similarity", "nli"]
_Measured = tuple[float, float | None, float | None]
"""A sentence against one passage: support, and the similarity check's cosine and overlap."""
SIMILARITY_WEIGHT = 0.7
"""The cosine's share of a sentence's support; the word overlap has the rest."""
SIMILARITY_THRESHOLD = 0.6
ENTAILMENT_THRESHOLD = 0.5
MIN_CONTENT_WORDS = 2
"""Sentences with fewer content words ("Yes.", "Sure, it is.", "[2]") are not checked."""

_FENCED_CODE = re.compile(r"(```|~~~).*?(?:\1|\Z)", re.DOTALL)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
# Spaces before a marker go with it; a match starts only where a run of them does (a run of
# 80,000 spaces was tried from each of its places: 6.6 s).
_CITATION = re.compile(r"(?<!\s)\s*\[(\d+(?:\s*[,;]\s*\d+)*)\]")
# "...days. [1] Next" -> "...days [1]. Next": a citation after the full stop is its sentence's.
_CITATIONS_AFTER_STOP = re.compile(r"([.!?])((?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])+)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[*_A-Z0-9])")
_LIST_MARKER = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)]|#+)\s+")
_WORD = r"(?u)\b\w+\b"


class GroundingInfo(BaseModel):
    """`ragtune.grounding`: how well the answer's sentences are supported by the passages it was
    given (`serving.grounding`)."""

    score: float
    """The share of the answer's checked sentences that the passages support (0..1)."""
    sentences: int
    """Sentences checked (very short ones, questions and bare citations are not)."""
    unsupported: list[str]
    """The sentences below the support threshold, as the answer wrote them."""
    method: Method
    """similarity (the embedding model and word overlap) or nli (RAGTUNE_GROUNDING_MODEL)."""


@dataclass(frozen=True)
class SentenceSupport:
    """One sentence of the answer and how well the passages support it."""

    text: str
    """As the answer wrote it (citations included)."""
    support: float
    """0..1: the blend of similarity and word overlap, or the entailment probability."""
    passage: int
    """The number ([n]) of the passage that supports it best."""
    cited: tuple[int, ...]
    """The passages it cites, when it cites any that exist."""
    supported: bool
    similarity: float | None = None
    """The similarity check's parts, for that passage: the cosine to its closest unit..."""
    overlap: float | None = None
    """...and the share of the sentence's content words found in it (None with NLI)."""


@dataclass(frozen=True)
class Grounding:
    """An answer checked against its passages."""

    score: float
    """The share of the checked sentences that are supported (0..1)."""
    sentences: int
    unsupported: tuple[str, ...]
    detail: tuple[SentenceSupport, ...]
    """Every checked sentence, in the answer's order."""
    method: Method

    def to_info(self) -> GroundingInfo:
        return GroundingInfo(
            score=round(self.score, 4),
            sentences=self.sentences,
            unsupported=list(self.unsupported),
            method=self.method,
        )


@dataclass(frozen=True)
class Claim:
    """A sentence of the answer: as written, without its citations, and the numbers it cites."""

    text: str
    plain: str
    cited: tuple[int, ...]


class EntailmentModel(Protocol):
    """Scores (premise, hypothesis) pairs: the probability that the premise entails it."""

    name: str

    def entailment(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


GROUNDING_MODEL = CrossEncoderSetting(
    "RAGTUNE_GROUNDING_MODEL",
    "grounding model",
    "the similarity check",
    "an NLI model, e.g. one trained on MNLI",
    GroundingModelError,
)


class CrossEncoderEntailment:
    """A sentence-transformers NLI CrossEncoder, loaded from disk: the probability of its
    entailment label (found by name in the model's labels, whatever their order)."""

    def __init__(self, name: str, device: str = "cpu", batch_size: int = 32) -> None:
        folder = GROUNDING_MODEL.folder(name)
        config = GROUNDING_MODEL.config(folder, name)
        labels = {int(k): str(v) for k, v in (config.get("id2label") or {}).items()}
        entails = [i for i, label in labels.items() if label.lower().startswith("entail")]
        if len(labels) < 2 or not entails:
            raise GroundingModelError(
                f"grounding model {name!r} is not an NLI model: it has no entailment label "
                f"(its labels: {', '.join(labels.values()) or 'none'}). Use a CrossEncoder "
                "trained for entailment (labels such as contradiction, entailment, neutral)."
            )
        self.label = entails[0]
        self._model = GROUNDING_MODEL.load(folder, name, device)
        self.name = name
        self.batch_size = batch_size

    def entailment(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        probabilities = self._model.predict(
            list(pairs), batch_size=self.batch_size, apply_softmax=True, show_progress_bar=False
        )
        return [float(p[self.label]) for p in probabilities]


class GroundingChecker:
    """Checks answers against the passages they were given.

    Usage:
        checker = GroundingChecker(embedder)       # or entailment=CrossEncoderEntailment(path)
        grounding = checker.check(answer, [hit.text for hit in passages])
        grounding.score, grounding.unsupported     # grounding is None: nothing to check

    A sentence citing passages as [n] (numbered from 1, as the prompt numbers them) is compared
    with those; one citing none, with every passage (the best counts). Blocking (embedding or
    NLI work): the server runs it in a worker thread.
    """

    def __init__(
        self,
        embedder: Embedder,
        *,
        threshold: float | None = None,
        entailment: EntailmentModel | None = None,
    ) -> None:
        self.embedder = embedder
        self.entailment = entailment
        self.method: Method = "nli" if entailment is not None else "similarity"
        default = ENTAILMENT_THRESHOLD if entailment is not None else SIMILARITY_THRESHOLD
        self.threshold = default if threshold is None else threshold
        self._units = _VectorCache()

    def score(self, answer: str, passages: Sequence[str]) -> float | None:
        """The grounding score alone (`check`'s), None when nothing is checkable: how router
        outcomes grade an answer without a reference."""
        checked = self.check(answer, passages)
        return checked.score if checked is not None else None

    def check(
        self, answer: str, passages: Sequence[str], numbers: Sequence[int] | None = None
    ) -> Grounding | None:
        """`answer` against `passages`, passage i being cited as [numbers[i]] (default i + 1).
        None when there are no passages or no sentence to check."""
        if not passages:
            return None
        numbers = list(numbers) if numbers is not None else list(range(1, len(passages) + 1))
        if len(numbers) != len(passages):
            raise ValueError("one number per passage")
        analyzer = _ContentWords()
        claims = [
            c for c in answer_sentences(answer) if _checkable(c, analyzer.words([c.plain])[0])
        ]
        if not claims:
            return None
        position = {number: i for i, number in enumerate(numbers)}
        candidates = []
        for claim in claims:
            cited = tuple(n for n in claim.cited if n in position)
            candidates.append([position[n] for n in cited] or list(range(len(passages))))
        if self.entailment is not None:
            supports = self._entailment(claims, passages, candidates)
        else:
            supports = self._similarity(claims, passages, candidates, analyzer)
        detail = []
        for claim, by_passage in zip(claims, supports, strict=True):
            best, (support, similarity, overlap) = max(
                by_passage.items(), key=lambda item: item[1][0]
            )
            detail.append(
                SentenceSupport(
                    claim.text,
                    support,
                    numbers[best],
                    tuple(n for n in claim.cited if n in position),
                    support >= self.threshold,
                    similarity,
                    overlap,
                )
            )
        unsupported = tuple(s.text for s in detail if not s.supported)
        return Grounding(
            score=1 - len(unsupported) / len(detail),
            sentences=len(detail),
            unsupported=unsupported,
            detail=tuple(detail),
            method=self.method,
        )

    def _similarity(
        self,
        claims: Sequence[Claim],
        passages: Sequence[str],
        candidates: Sequence[list[int]],
        analyzer: _ContentWords,
    ) -> list[dict[int, _Measured]]:
        # Units: each sentence of a passage and each pair of adjacent ones (an answer sentence
        # often joins two), of the passages some sentence is compared with.
        units: list[tuple[int, str]] = []
        for i in sorted({i for chosen in candidates for i in chosen}):
            sentences = _passage_sentences(passages[i]) or [passages[i]]
            units.extend((i, s) for s in sentences)
            units.extend((i, f"{a} {b}") for a, b in itertools.pairwise(sentences))
        claim_vectors, unit_vectors = self._embed([c.plain for c in claims], [t for _, t in units])
        similarity = claim_vectors @ unit_vectors.T
        owner = np.array([i for i, _ in units])
        claim_words = analyzer.words([c.plain for c in claims])
        passage_words = [set(words) for words in analyzer.words(passages)]
        supports: list[dict[int, _Measured]] = []
        for row, (words, chosen) in enumerate(zip(claim_words, candidates, strict=True)):
            content = set(words)
            by_passage: dict[int, _Measured] = {}
            for i in chosen:
                cosine = float(similarity[row, owner == i].max())
                overlap = len(content & passage_words[i]) / len(content)
                blended = SIMILARITY_WEIGHT * cosine + (1 - SIMILARITY_WEIGHT) * overlap
                by_passage[i] = (min(1.0, max(0.0, blended)), cosine, overlap)
            supports.append(by_passage)
        return supports

    def _entailment(
        self, claims: Sequence[Claim], passages: Sequence[str], candidates: Sequence[list[int]]
    ) -> list[dict[int, _Measured]]:
        assert self.entailment is not None
        # The passage whole is the premise: NLI models read up to 512 tokens, and pairs cost
        # a model call each.
        pairs = [(row, i) for row, chosen in enumerate(candidates) for i in chosen]
        scores = self.entailment.entailment([(passages[i], claims[row].plain) for row, i in pairs])
        supports: list[dict[int, _Measured]] = [{} for _ in claims]
        for (row, i), score in zip(pairs, scores, strict=True):
            supports[row][i] = (score, None, None)
        return supports

    def _embed(self, claims: Sequence[str], units: Sequence[str]) -> tuple[Any, Any]:
        """The vectors of the answer's sentences and of the passages' units, in one pass: the
        units already embedded for an earlier answer come from the cache."""
        cached = self._units.get(units)
        missing = sorted({t for t, v in zip(units, cached, strict=True) if v is None})
        texts = [*claims, *missing]
        # By length, a batch at a time (less padding); truncated as a query is, so that a long
        # sentence is still scored.
        order = sorted(range(len(texts)), key=lambda n: len(texts[n]))
        vectors = np.zeros((len(texts), self.embedder.dimension), dtype=np.float32)
        size = self.embedder.batch_size
        for start in range(0, len(order), size):
            batch = order[start : start + size]
            vectors[batch] = self.embedder.embed_queries([texts[n] for n in batch])
        fresh = {t: vectors[len(claims) + k].copy() for k, t in enumerate(missing)}
        self._units.put(fresh)
        unit_vectors = [fresh[t] if v is None else v for t, v in zip(units, cached, strict=True)]
        return vectors[: len(claims)], np.asarray(unit_vectors).reshape(len(units), -1)


class _VectorCache:
    """Vectors of passage units already embedded, the most recently used kept: the passages
    that answer common questions come back again and again. Shared by worker threads."""

    def __init__(self, size: int = 8192) -> None:
        self.size = size
        self._vectors: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, texts: Sequence[str]) -> list[Any | None]:
        with self._lock:
            found = [self._vectors.get(t) for t in texts]
            for text, vector in zip(texts, found, strict=True):
                if vector is not None:
                    self._vectors.move_to_end(text)
        return found

    def put(self, vectors: dict[str, Any]) -> None:
        with self._lock:
            self._vectors.update(vectors)
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)


def answer_sentences(text: str) -> list[Claim]:
    """The sentences of a text (fenced code left out; list items and lines apart), each with
    the passage numbers it cites; a citation standing alone goes with the sentence before it."""
    claims: list[Claim] = []
    for line in _FENCED_CODE.sub("\n", text).splitlines():
        item = _CITATIONS_AFTER_STOP.sub(r"\2\1", _LIST_MARKER.sub("", line))
        for piece in _SENTENCE_END.split(item.strip()):
            markers = _citation_markers(piece)
            cited = tuple(n for marker in markers for n in _numbers(marker))
            # Without its markers only: an index in code (`xs[1]`) stays whole.
            ends = [0, *(at for marker in markers for at in marker.span()), len(piece)]
            kept = (piece[begin:end] for begin, end in zip(ends[::2], ends[1::2], strict=True))
            plain = " ".join("".join(kept).split())
            if not re.search(r"\w", plain):
                if cited and claims:  # a bare citation: its sentence's
                    last = claims[-1]
                    text_cited = f"{last.text} {piece.strip()}"
                    claims[-1] = Claim(text_cited, last.plain, last.cited + cited)
                continue
            claims.append(Claim(piece.strip(), plain, cited))
    return claims


def citations(text: str) -> list[tuple[int, tuple[int, ...]]]:
    """The citation markers of a text ("[1]", "[1, 2]"): where each one's "[" is, and the
    passage numbers it cites. Code (fenced, or inline between backticks) cites nothing:
    `xs[1]` is an index; nor does an index in code written outside backticks that more code
    follows (`_indexes`: `args[2].strip()`)."""
    return [(marker.start(1) - 1, _numbers(marker)) for marker in _citation_markers(text)]


def _citation_markers(text: str) -> list[re.Match[str]]:
    """The citation markers of a text (see `citations`), each with the spaces before it."""
    code = [match.span() for match in _FENCED_CODE.finditer(text)]
    # Inline code never runs past a paragraph: a stray backtick pairs with none in the next.
    bounds = [0, *(at for blank in _BLANK_LINE.finditer(text) for at in blank.span()), len(text)]
    for begin, end in zip(bounds[::2], bounds[1::2], strict=True):
        code += [(begin + opens, begin + closes) for opens, closes in code_spans(text[begin:end])]
    found = []
    for match in _CITATION.finditer(text):
        opens = match.start(1) - 1
        in_code = any(start <= opens < end for start, end in code)
        if not in_code and not _indexes(text, opens, match.end()):
            found.append(match)
    return found


def _numbers(marker: re.Match[str]) -> tuple[int, ...]:
    return tuple(int(n) for n in re.split(r"[,;]", marker.group(1)))


_CODE_GOES_ON = re.compile(r"\((?!https?:|/|#)|\.[a-z_]|\s?(?:[-+*/%]?=|!=|->)")
"""What follows an index in code and never a citation: a call (not a Markdown link's
target), an attribute, an assignment or a comparison."""


def _indexes(text: str, opens: int, closes: int) -> bool:
    """Whether the "[n]" from `opens` (its "[") to `closes` indexes code written outside
    backticks rather than cites: glued to a name and followed by more code (`args[2].strip()`,
    `x[1] = 5`, `f[3](y)`, `ptr[1]->next`). A marker glued to a name alone cites: "it[1].",
    "Node.js[1]", "SQLITE_MAX_LENGTH[1]" and "3.14[1]" are how answers cite, and so is
    `sys.argv[1]` as far as anything tells (a small model writes code outside backticks, but
    it cites after identifiers too)."""
    glued = opens > 0 and (text[opens - 1].isalnum() or text[opens - 1] == "_")
    return glued and _CODE_GOES_ON.match(text, closes) is not None


def _passage_sentences(text: str) -> list[str]:
    """A passage's lines, each cut into sentences (code and list items kept as they are)."""
    return [
        piece
        for line in text.splitlines()
        for piece in _SENTENCE_END.split(line.strip())
        if re.search(r"\w", piece)
    ]


def _checkable(claim: Claim, words: Sequence[str]) -> bool:
    """A statement with some content: not a question, not "Yes."."""
    return not claim.plain.endswith("?") and len(set(words)) >= MIN_CONTENT_WORDS


class _ContentWords:
    """A text's content words: lowercased, stemmed, without stop words (one per check: the
    stemmer is not thread-safe)."""

    def __init__(self) -> None:
        import Stemmer
        from bm25s.stopwords import STOPWORDS_EN_PLUS

        self._stemmer = Stemmer.Stemmer("english")
        self._stopwords = list(STOPWORDS_EN_PLUS)

    def words(self, texts: Sequence[str]) -> list[list[str]]:
        import bm25s

        tokens: list[list[str]] = bm25s.tokenize(
            list(texts),
            token_pattern=_WORD,
            stopwords=self._stopwords,
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        return tokens


def load_grounding_checker(
    settings: GroundingSettings, embedder: Embedder, device: str = "cpu"
) -> GroundingChecker | None:
    """The configured check (`RAGTUNE_GROUNDING_MODEL` for NLI, else similarity), or None when
    `RAGTUNE_GROUNDING` is off."""
    if not settings.grounding:
        return None
    entailment = (
        CrossEncoderEntailment(settings.grounding_model, device)
        if settings.grounding_model
        else None
    )
    return GroundingChecker(embedder, threshold=settings.grounding_threshold, entailment=entailment)
