"""Self-calibration of a collection's fusion, with no labels (`ragtune tune retrieval`).

Fusion weights tuned on one corpus did not carry over to another (issue 15: on the SQLite HTML
docs ragtune's hybrid search scored below a naive setup with weights tuned on the Python docs).
So a collection can choose its own, from pseudo-queries drawn from its own chunks, in the
inverse-cloze style: a sentence of a sampled chunk, thinned to some of its words (a question
asks in fewer words than its answer), is the query; the chunk it came from is left out of the
ranking and its neighbours in the same section are the answers (the sentence's own chunk would
always be found by BM25, which shares every word with it). Each pseudo-query is searched once
by each retriever (dense and BM25, `depth` deep); every candidate setting (lexical weight,
rrf_k) is then scored by fusing those two lists again, so the grid costs no extra search. The
setting with the best MRR@10 is stored with the collection, with the embedding model it was
measured with: a collection read through another model refuses it.

Measured on both developers' sets (bench/retrieval.py --calibrate): pseudo-queries favour BM25
more than real questions do (on both sets BM25 alone beats dense alone on them, while on the
real questions dense wins), so the choice leans lexical. It is therefore a command, not a step
of every ingest, that stores its choice only when asked (`--store`), and the shipped defaults
stay in force for a collection never calibrated.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ragtune.retrieval.dense import DenseSearch
from ragtune.retrieval.embedder import Embedder, is_tuned
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.fusion import FusionMethod, Ranked, fuse
from ragtune.retrieval.lexical import LexicalIndex
from ragtune.retrieval.settings import (
    MAX_FUSION_WEIGHT,
    RetrievalSettings,
    check_fusion_weight,
    check_rrf_k,
)
from ragtune.retrieval.store import Collection

CALIBRATION_KEY = "calibration"
"""The collection metadata key the calibration is stored under (JSON)."""
FUSION_KEYS = frozenset({"fusion", "dense_weight", "lexical_weight", "rrf_k"})
"""The settings a calibration (or a tuned collection's defaults) chooses; given explicitly, they
win over both."""
LEXICAL_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
RRF_KS = (5, 10, 20, 40, 60)
CUTOFF = 10
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_WORD = re.compile(r"\S+")


@dataclass(frozen=True)
class Calibration:
    """Fusion settings chosen for one collection, and the evidence they were chosen on."""

    lexical_weight: float
    rrf_k: int
    dense_weight: float = 1.0
    fusion: str = "rrf"
    """The fusion method chosen (`retrieval.fusion`); calibrations stored before score fusion
    existed were all RRF."""
    embedding_model: str = ""
    """The embedding model the pseudo-queries were searched with."""
    revision: str = ""
    """The collection's revision when it was calibrated."""
    pseudo_queries: int = 0
    mrr: float = 0.0
    """MRR@10 of the chosen setting on the pseudo-queries."""
    default_mrr: float = 0.0
    """MRR@10 of the shipped defaults on the same pseudo-queries."""
    seconds: float = 0.0
    created: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        """The calibration `to_json` wrote; ValueError (or TypeError) for anything search
        could not fuse with, or show, as it is."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("its JSON is not an object")
        known = set(cls.__dataclass_fields__)
        calibration = cls(**{k: v for k, v in data.items() if k in known})
        calibration.check()
        return calibration

    def check(self) -> None:
        """ValueError unless every field holds what fusion and the reports expect: a value
        written by something else could otherwise divide by zero, or reach `search --json` as
        NaN."""
        if self.fusion not in ("score", "rrf"):
            raise ValueError(f"unknown fusion method {self.fusion!r}")
        for name in ("lexical_weight", "dense_weight"):
            _require(name, getattr(self, name), float, bounds=check_fusion_weight)
        if self.lexical_weight == 0 and self.dense_weight == 0:
            raise ValueError("lexical_weight and dense_weight are both 0")
        # Ranks start at 1: rrf_k >= 0 keeps every 1 / (rrf_k + rank) finite and positive.
        _require("rrf_k", self.rrf_k, int, bounds=check_rrf_k)
        _require("pseudo_queries", self.pseudo_queries, int, minimum=0)
        for name in ("mrr", "default_mrr", "seconds", "created"):
            _require(name, getattr(self, name), float)
        for name in ("embedding_model", "revision"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} is not a string")

    def apply(self, settings: RetrievalSettings) -> RetrievalSettings:
        """`settings` with this calibration's fusion."""
        return settings.model_copy(
            update={
                "fusion": self.fusion,
                "dense_weight": self.dense_weight,
                "lexical_weight": self.lexical_weight,
                "rrf_k": self.rrf_k,
            }
        )

    def describe(self) -> str:
        return describe_fusion(self.fusion, self.lexical_weight, self.rrf_k, self.dense_weight)

    def summary(self) -> dict[str, Any]:
        """What `docs list` and `search --json` show."""
        return {
            "fusion": self.fusion,
            "lexical_weight": self.lexical_weight,
            "dense_weight": self.dense_weight,
            "rrf_k": self.rrf_k,
            "embedding_model": self.embedding_model,
            "pseudo_queries": self.pseudo_queries,
            "mrr": round(self.mrr, 4),
            "default_mrr": round(self.default_mrr, 4),
            "revision": self.revision,
        }


def _require(
    name: str,
    value: object,
    kind: type,
    minimum: float | None = None,
    bounds: Callable[[Any], object] | None = None,
) -> None:
    """ValueError unless `value` is a finite number (an int for `kind` int; never a bool) of
    at least `minimum`, that `bounds` (the settings' own check of that knob) accepts."""
    wanted = ("an integer" if kind is int else "a finite number") + (
        f" >= {minimum:g}" if minimum is not None else ""
    )
    allowed = (int,) if kind is int else (int, float)
    if (
        isinstance(value, bool)
        or not isinstance(value, allowed)
        or not math.isfinite(value)
        or (minimum is not None and value < minimum)
    ):
        raise ValueError(f"{name} is {value!r}, not {wanted}")
    if bounds is not None:
        try:
            bounds(value)
        except ValueError as exc:
            raise ValueError(f"{name} is {value!r}: {exc}") from None


def describe_fusion(
    method: str, lexical_weight: float, rrf_k: int, dense_weight: float = 1.0
) -> str:
    """A fusion setting in words, for people: "score fusion, lexical weight 0.6" (the dense
    weight named when it is not 1)."""
    weights = f"lexical weight {lexical_weight}"
    if dense_weight != 1:
        weights = f"dense weight {dense_weight}, {weights}"
    if method == "rrf":
        return f"RRF, {weights}, rrf_k {rrf_k}"
    return f"score fusion, {weights}"


def default_fusion(collection: Collection, settings: RetrievalSettings) -> RetrievalSettings:
    """`settings` with the fusion a calibration of `collection` replaces: BM25 at
    `tuned_lexical_weight` for a collection embedded with a model tuned on it (`ragtune tune
    embedder`) unless a fusion setting was given explicitly, `settings` as they are otherwise."""
    return fusion_in_force(collection, settings, None)[0]


def fusion_in_force(
    collection: Collection, settings: RetrievalSettings, calibration: Calibration | None
) -> tuple[RetrievalSettings, str]:
    """The settings `collection` is fused with, and where they came from: a fusion setting
    given explicitly ("settings") over its stored `calibration` ("calibration") over the
    shipped defaults, with BM25 at `tuned_lexical_weight` for a tuned embedder ("tuned
    defaults") or as they are ("defaults")."""
    if FUSION_KEYS & settings.model_fields_set:
        return settings, "settings"
    if calibration is not None:
        return calibration.apply(settings), "calibration"
    if is_tuned(collection.embedding_model):
        tuned = settings.model_copy(update={"lexical_weight": settings.tuned_lexical_weight})
        return tuned, "tuned defaults"
    return settings, "defaults"


def stored_calibration(collection: Collection) -> Calibration | None:
    """The collection's stored calibration, checked against its embedding model (None when it
    was never calibrated). RetrievalError when it came from another embedding model or cannot
    be read, saying how to recalibrate or reset it."""
    calibration, refused = read_calibration(collection)
    if refused is not None:
        name = collection.name
        raise RetrievalError(
            f"collection {name!r} {refused}; recalibrate it: ragtune tune retrieval "
            f"--collection {name} --store (or go back to the shipped defaults: ragtune tune "
            f"retrieval --collection {name} --reset)"
        )
    return calibration


def read_calibration(collection: Collection) -> tuple[Calibration | None, str | None]:
    """(the collection's stored calibration or None, None), or (None, why it is refused: it
    came from another embedding model or cannot be read), for the commands that replace or
    list a refused one instead of failing on it (`tune retrieval`, `docs list`)."""
    raw = collection.metadata().get(CALIBRATION_KEY)
    if not raw:  # never calibrated, or reset to the defaults
        return None, None
    try:
        calibration = Calibration.from_json(str(raw))
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        return None, f"holds an unreadable calibration ({exc})"
    if calibration.embedding_model != collection.embedding_model:
        return None, (
            f"was calibrated with the embedding model {calibration.embedding_model!r}, but it "
            f"is read with {collection.embedding_model!r}"
        )
    return calibration, None


@dataclass(frozen=True)
class PseudoQuery:
    text: str
    chunk_id: str
    """The chunk the sentence was taken from (left out of the ranking)."""
    targets: frozenset[str] = frozenset()
    """The chunks that count as answers: its neighbours in the same section."""


def pseudo_queries(
    collection: Collection,
    lexical: LexicalIndex,
    count: int,
    seed: int = 0,
    keep_words: float = 0.6,
    min_words: int = 6,
) -> list[PseudoQuery]:
    """Up to `count` inverse-cloze queries: one sentence (>= `min_words` words) of each of
    `count` chunks drawn at random, thinned to `keep_words` of its words (order kept)."""
    rng = random.Random(seed)
    ids = [chunk.id for chunk in collection.scan()]
    rng.shuffle(ids)
    queries: list[PseudoQuery] = []
    for start in range(0, len(ids), 500):
        if len(queries) >= count:
            break
        batch = ids[start : start + 500]
        # In the shuffled order: a store returns the chunks asked for in its own (Chroma: the
        # order they were stored in), which would favour the earliest-stored.
        by_id = {chunk.id: chunk for chunk in collection.get(batch)}
        for chunk in (by_id[i] for i in batch if i in by_id):
            sentences = [
                s.split()
                for s in _SENTENCE.split(chunk.text or "")
                if len(_WORD.findall(s)) >= min_words
            ]
            if not sentences:
                continue
            targets = _neighbours(lexical, chunk.id)
            if not targets:
                continue
            sentence = rng.choice(sentences)[:40]
            kept = [w for w in sentence if rng.random() < keep_words]
            if len(kept) < 3:
                continue
            queries.append(PseudoQuery(" ".join(kept), chunk.id, targets))
            if len(queries) >= count:
                break
    return queries


def _neighbours(lexical: LexicalIndex, chunk_id: str) -> frozenset[str]:
    row = lexical.row_of.get(chunk_id)
    if row is None:
        return frozenset()
    base = lexical.rows[row]
    found = set()
    for step in (-1, 1):
        other = lexical.position(base["doc_id"], base["chunk_index"] + step)
        if other is not None and lexical.rows[other].get("section") == base.get("section"):
            found.add(lexical.ids[other])
    return frozenset(found)


Run = tuple[Ranked, Ranked, frozenset[str]]
"""One pseudo-query searched: dense and lexical (rank, score) by chunk id, and its answers."""
Choice = tuple[FusionMethod, float, int]
"""(fusion method, lexical weight, rrf_k): dense weight 1."""


def fused_mrr(runs: Sequence[Run], choice: Choice, dense_weight: float = 1.0) -> float:
    """MRR@10 of fusion by `choice` (and `dense_weight`) over (dense, lexical, answers) runs."""
    method, lw, k = choice
    total = 0.0
    for dense, lexical, targets in runs:
        scores = fuse(dense, lexical, method, dense_weight, lw, k)
        found = [scores[t] for t in targets if t in scores]
        if not found:
            continue
        mine = max(found)
        better = sum(1 for s in scores.values() if s > mine)
        if better < CUTOFF:
            total += 1.0 / (better + 1)
    return total / len(runs) if runs else 0.0


def choose_fusion(runs: Sequence[Run], defaults: RetrievalSettings) -> tuple[Choice, float, float]:
    """((method, lexical weight, rrf_k), its MRR@10, the defaults' MRR@10) over the grid (RRF
    over weights and rrf_k; score fusion over weights): the best MRR@10; ties go to the
    defaults' method, then to the setting nearest them (the grid is coarse)."""
    grid: list[Choice] = [("rrf", lw, k) for lw in LEXICAL_WEIGHTS for k in RRF_KS]
    grid += [("score", lw, defaults.rrf_k) for lw in LEXICAL_WEIGHTS]
    scored = {choice: fused_mrr(runs, choice) for choice in grid}
    if defaults.dense_weight > 0:
        # Fusion ranks alike when both weights are scaled alike: dense weight 1, as the grid.
        # Past the largest weight the dense score hardly counts: read as the largest.
        ratio = min(defaults.lexical_weight / defaults.dense_weight, MAX_FUSION_WEIGHT)
        default: Choice = (defaults.fusion, ratio, defaults.rrf_k)
        default_mrr = scored.setdefault(default, fused_mrr(runs, default))
    else:  # BM25 alone: the grid's highest BM25 weight is the setting nearest it
        default = (defaults.fusion, max(LEXICAL_WEIGHTS), defaults.rrf_k)
        default_mrr = fused_mrr(runs, default, dense_weight=0.0)
    best = max(
        scored,
        key=lambda s: (
            round(scored[s], 4),
            s[0] == default[0],
            -abs(s[1] - default[1]),
            -abs(s[2] - default[2]),
        ),
    )
    return best, scored[best], default_mrr


def calibrate(
    collection: Collection,
    lexical: LexicalIndex,
    embedder: Embedder,
    defaults: RetrievalSettings,
    queries: int = 300,
    seed: int = 0,
    depth: int | None = None,
    keep_words: float = 0.6,
) -> Calibration:
    """Choose the collection's fusion from its own pseudo-queries (see the module doc), each
    retriever's candidates `depth` deep (None: as deep as searches fuse them, the settings'
    `fusion_depth`)."""
    started = time.perf_counter()
    depth = defaults.fusion_depth if depth is None else depth
    if collection.count() == 0:
        raise RetrievalError(
            f"collection {collection.name!r} is empty: ingest documents before calibrating"
        )
    drawn = pseudo_queries(collection, lexical, queries, seed, keep_words)
    if len(drawn) < 20:
        raise RetrievalError(
            f"collection {collection.name!r} gives only {len(drawn)} pseudo-queries from its "
            f"{collection.count()} chunks; 20 are needed to calibrate. A chunk gives one only "
            "when it holds a sentence of 6 words or more and the chunk before or after it in "
            "its document is in the same section (that neighbour is the answer the query must "
            "find): a document of one chunk, or a section of one chunk, gives none. Keep the "
            "defaults."
        )
    vectors = embedder.embed_queries([q.text for q in drawn])
    dense = DenseSearch(collection, defaults.exact_search_max_chunks)  # as search ranks
    runs = []
    for query, vector in zip(drawn, vectors, strict=True):
        # The query's own chunk is left out: its neighbours are the answers.
        dense_hits = [
            (i, 1.0 - distance)
            for i, distance in dense.nearest(lexical, vector, depth + 1)
            if i != query.chunk_id
        ]
        lexical_hits = [
            (lexical.ids[hit.row], hit.score)
            for hit in lexical.search(query.text, depth + 1)
            if lexical.ids[hit.row] != query.chunk_id
        ]
        runs.append(
            (
                {i: (rank, s) for rank, (i, s) in enumerate(dense_hits[:depth], start=1)},
                {i: (rank, s) for rank, (i, s) in enumerate(lexical_hits[:depth], start=1)},
                query.targets,
            )
        )
    (method, lexical_weight, rrf_k), mrr, default_mrr = choose_fusion(runs, defaults)
    return Calibration(
        fusion=method,
        lexical_weight=lexical_weight,
        rrf_k=rrf_k,
        embedding_model=collection.embedding_model,
        revision=collection.revision(),
        pseudo_queries=len(runs),
        mrr=mrr,
        default_mrr=default_mrr,
        seconds=time.perf_counter() - started,
    )


def store_calibration(collection: Collection, calibration: Calibration | None) -> None:
    """Store `calibration` with the collection (None: back to the shipped defaults). Chunks,
    embeddings and the revision stay as they are."""
    if calibration is not None and calibration.embedding_model != collection.embedding_model:
        raise RetrievalError(
            f"this calibration was measured with {calibration.embedding_model!r}; collection "
            f"{collection.name!r} is embedded with {collection.embedding_model!r}"
        )
    if calibration is not None:
        try:  # what every search will read back: never one it would refuse
            calibration.check()
        except ValueError as exc:
            raise RetrievalError(f"this calibration cannot be stored: {exc}") from None
    collection.set_metadata_value(CALIBRATION_KEY, calibration.to_json() if calibration else "")
