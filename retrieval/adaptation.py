"""Domain adaptation of a collection's embedding model, with no labels (`ragtune tune embedder`).

The configured sentence-transformers model is fine-tuned on pairs drawn from the collection's own
chunks, inverse-cloze style: a sentence of a chunk is the query, the chunk (under its heading,
without that sentence nine times in ten, so that the pair is not a copy) is its passage, and the
other passages of the batch are its negatives (MultipleNegativesRankingLoss). The tuned model
gets its own identity (`ragtune-tuned/<collection>-<time>`, stored under the data directory's
`embedders/`), the collection is re-embedded with it into a staging collection, measured there
against the collection as it is, and only then put in its place: a tuned model that measures
worse is not adopted unless asked for, and an interrupted run leaves the collection untouched.

What it is measured on: pseudo-queries (as `retrieval.calibration` draws them) from chunks kept
out of training, and, when given, a labelled set in `eval retrieval`'s format, searched as the
adopted collection will be: with BM25 weighed by `tuned_lexical_weight` (`Retriever.fusion`).
On the developers' five sets that weight put hybrid MRR@10 above the untuned collection's on
all five, and R@5 one question below it on one (README, "Tuning the embedder"); training takes
minutes of CPU a collection, so it is a command to run on a collection, not a step of
ingestion.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ragtune.retrieval.calibration import CUTOFF, PseudoQuery, pseudo_queries
from ragtune.retrieval.conversation import DEFAULT_WEIGHTING, TurnWeighting, conversation_searches
from ragtune.retrieval.dense import DenseSearch
from ragtune.retrieval.embedder import (
    TUNED_PREFIX,
    Embedder,
    collection_embedder,
    is_tuned,
    load_tuned_embedder,
    resolve_model_path,
    tuned_model_dir,
    tuned_models_root,
)
from ragtune.retrieval.errors import RetrievalError, StagingDroppedError
from ragtune.retrieval.evaluation import QAItem, evaluate_conversations
from ragtune.retrieval.lexical import LexicalIndex, LexicalIndexes
from ragtune.retrieval.search import Retriever, SearchMode
from ragtune.retrieval.settings import RetrievalSettings, file_name_for
from ragtune.retrieval.store import (
    EMBEDDING_BASE_KEY,
    EMBEDDING_MODEL_KEY,
    STAGING_SUFFIX,
    ChunkRecord,
    Collection,
    StoredChunk,
    VectorStore,
)

MANIFEST = "ragtune-embedder.json"
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_DROPPED_KEYS = ("calibration", EMBEDDING_BASE_KEY)
"""Collection metadata that does not carry over to a re-embedded collection: a calibration was
measured with the old vectors."""


@dataclass(frozen=True)
class TrainingPair:
    query: str
    passage: str


def training_pairs(
    collection: Collection, count: int, seed: int = 0, exclude: frozenset[str] = frozenset()
) -> list[TrainingPair]:
    """Up to `count` (query, passage) pairs from chunks not in `exclude`, one per chunk drawn."""
    rng = random.Random(seed)
    ids = [chunk.id for chunk in collection.scan() if chunk.id not in exclude]
    rng.shuffle(ids)
    pairs: list[TrainingPair] = []
    for start in range(0, len(ids), 500):
        if len(pairs) >= count:
            break
        by_id = {chunk.id: chunk for chunk in collection.get(ids[start : start + 500])}
        for chunk in (by_id[i] for i in ids[start : start + 500] if i in by_id):  # drawn order
            text = chunk.text or ""
            sentences = [s for s in _SENTENCE.split(text) if len(s.split()) >= 6]
            if not sentences:
                continue
            sentence = rng.choice(sentences)
            passage = text
            if len(sentences) > 1 and rng.random() < 0.9:
                passage = text.replace(sentence, " ", 1)
            heading = str(chunk.metadata.get("heading") or chunk.metadata.get("title") or "")
            pairs.append(
                TrainingPair(" ".join(sentence.split()[:40]), f"{heading}\n{passage}".strip())
            )
            if len(pairs) >= count:
                break
    return pairs


@dataclass
class Training:
    """How a tuned model was made: stored beside it as its manifest."""

    model_id: str
    base_model: str
    collection: str
    revision: str
    pairs: int
    steps: int
    batch_size: int
    learning_rate: float
    seed: int
    seconds: float = 0.0
    first_loss: float = 0.0
    last_loss: float = 0.0
    created: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def fine_tune(
    base_model: str,
    pairs: Sequence[TrainingPair],
    out_dir: Path,
    training: Training,
    on_step: Callable[[int, float], None] | None = None,
) -> Training:
    """Fine-tune the sentence-transformers model `base_model` (a configured name or a path) on
    `pairs` with in-batch negatives, `training.steps` steps of `training.batch_size` pairs
    (cycling through the pairs), linear warm-up and decay; save it to `out_dir` with its
    manifest. CPU-feasible for MiniLM: about 8 s a step of 32 pairs on two cores."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.losses import MultipleNegativesRankingLoss

    if len(pairs) < training.batch_size:
        raise RetrievalError(
            f"only {len(pairs)} training pairs (chunks with a sentence of 6 words or more); at "
            f"least one batch ({training.batch_size}) is needed to tune the embedder"
        )
    started = time.perf_counter()
    torch.manual_seed(training.seed)
    order = list(pairs)
    random.Random(training.seed).shuffle(order)
    model = SentenceTransformer(resolve_model_path(base_model), device="cpu")
    loss = MultipleNegativesRankingLoss(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=training.learning_rate)
    steps, size = training.steps, training.batch_size
    warmup = max(1, steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda i: min(1.0, (i + 1) / warmup) * max(0.0, 1.0 - i / steps)
    )
    model.train()
    history: list[float] = []
    for step in range(steps):
        batch = [order[(step * size + j) % len(order)] for j in range(size)]
        queries = model.preprocess([p.query for p in batch])
        passages = model.preprocess([p.passage for p in batch])
        value = loss([queries, passages], torch.empty(0))
        value.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        history.append(float(value.item()))
        if on_step is not None:
            on_step(step + 1, history[-1])
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(str(out_dir))
    window = max(1, min(10, steps // 4))
    training.seconds = time.perf_counter() - started
    training.first_loss = sum(history[:window]) / window
    training.last_loss = sum(history[-window:]) / window
    (out_dir / MANIFEST).write_text(json.dumps(training.to_dict(), indent=2) + "\n")
    return training


TUNED_STAMP = "%Y%m%d-%H%M%S"
"""When a model was tuned, in its name (UTC); `_TUNED_STAMP_PATTERN` reads it back."""
_TUNED_STAMP_PATTERN = r"\d{8}-\d{6}"


def tuned_name(collection: str) -> str:
    # Its folder is named so (`model_dir`): a long collection name is shortened.
    stamp = time.strftime(TUNED_STAMP, time.gmtime())
    return f"{TUNED_PREFIX}{file_name_for(collection)}-{stamp}"


def remove_orphaned_models(
    store: VectorStore, target: Collection, settings: RetrievalSettings
) -> list[str]:
    """Remove the models tuned for `target` in this store (`tuned_name`'s folders under
    `embedders/` marked with the store's location, `STORE_MARK`; about 90 MB each) that no
    collection is embedded with: left by runs killed before they could remove their own (kill
    -9, a power cut). Only with the embedded store, which the caller holds for writing: a
    Chroma server lets another run tune the same collection meanwhile, and its model, not
    adopted yet, would look the same; and a data directory may serve both, so a folder marked
    for another store (or made before marks) is never removed. The names of those removed."""
    if settings.chroma_url:
        return []
    # The collection's exact name: "docs-2"'s models are not "docs"'s.
    own = re.compile(re.escape(file_name_for(target.name)) + "-" + _TUNED_STAMP_PATTERN)
    in_use = {target.embedding_model, target.metadata().get(EMBEDDING_BASE_KEY)}
    in_use.update(info.embedding_model for info in store.list_collections())
    embedders = tuned_models_root(settings.data_dir)
    removed: list[str] = []
    for folder in sorted(embedders.iterdir()) if embedders.is_dir() else []:
        if (
            own.fullmatch(folder.name)
            and folder.is_dir()
            and not folder.is_symlink()
            and TUNED_PREFIX + folder.name not in in_use
            and _marked_for(folder, store.location)
        ):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
    return removed


STORE_MARK = ".ragtune-store"
"""A tuned model's file naming the store it was tuned for (its location)."""


def _marked_for(folder: Path, location: str) -> bool:
    try:
        return (folder / STORE_MARK).read_text("utf-8") == location
    except OSError:
        return False


def reembed(
    store: VectorStore,
    collection: Collection,
    embedder: Embedder,
    base_model: str | None,
    on_progress: Callable[[int, int], None] | None = None,
) -> Collection:
    """A staging copy of `collection` (chunks, ids, metadata, collection metadata but its
    calibration) with every chunk embedded by `embedder`; `base_model`: the configured model
    the embedder was tuned from (None: it is the configured model). The collection itself is
    not touched: `adopt` puts the copy in its place."""
    metadata = {k: v for k, v in collection.metadata().items() if k not in _DROPPED_KEYS}
    metadata.pop(EMBEDDING_MODEL_KEY, None)
    if base_model is not None:
        metadata[EMBEDDING_BASE_KEY] = base_model
    staging = store.create_staging(collection.name + STAGING_SUFFIX, embedder.model_id, metadata)
    try:
        total, done = collection.count(), 0
        ids = [chunk.id for chunk in collection.scan()]
        page = max(1, min(1000, staging.max_batch))
        for start in range(0, len(ids), page):
            chunks = collection.get(ids[start : start + page])
            _write_embedded(staging, chunks, embedder)
            done += len(chunks)
            if on_progress is not None:
                on_progress(done, total)
    except BaseException as exc:
        # Interrupted (Ctrl-C) or failed: the partial copy goes, the collection is as it was.
        explained = _explained(exc, collection, staging)
        with contextlib.suppress(Exception):
            store.delete_staging(staging)
        if explained is not None:
            raise explained from exc
        raise
    return staging


def _explained(
    exc: BaseException, collection: Collection, staging: Collection
) -> RetrievalError | None:
    """What a store's own error (a collection not found) meant while a collection was copied:
    another process deleted or rebuilt it, or another rebuild dropped this copy for its own
    (two runs at once). None when it was neither, or the error is already ragtune's."""
    if not isinstance(exc, Exception) or isinstance(exc, RetrievalError):
        return None
    with contextlib.suppress(Exception):
        if staging.replaced():
            return StagingDroppedError(
                f"the copy of collection {collection.name!r} being made here was dropped by "
                "another rebuild of the same collection (two `ragtune tune embedder` runs on "
                "it at once); nothing was changed. Let the other run finish"
            )
        if collection.replaced():
            return _replaced_elsewhere(collection)
    return None


def _replaced_elsewhere(collection: Collection) -> RetrievalError:
    return RetrievalError(
        f"collection {collection.name!r} was deleted or rebuilt by another process while it "
        "was re-embedded here; nothing was changed. Look at it again (ragtune docs list) "
        "before running the command again"
    )


CATCH_UP_ROUNDS = 5
"""How many times `adopt` carries writes over before it gives up on a collection that is
written to without a pause."""


def adopt(
    store: VectorStore,
    collection: Collection,
    staging: Collection,
    embedder: Embedder,
    copied_at: str,
    abandon: Callable[[], None] | None = None,
) -> int:
    """Put the re-embedded staging copy in the place of `collection`, which was at revision
    `copied_at` when the copy began. What another process sharing the store (a Chroma server)
    wrote to the collection since is carried over first (`catch_up`, with `embedder`, the
    copy's model), so the swap loses nothing stored; the number of chunks carried over.
    RetrievalError when the collection is still being written to after `CATCH_UP_ROUNDS`
    rounds, or was deleted or replaced meanwhile. On any error before the swap, nothing is
    changed and `abandon` (dropping the copy) is called before the error goes on; the swap
    itself undoes a half-done rename, and refuses a copy another rebuild dropped (two runs at
    once on one collection: the other run's copy is left to it)."""
    carried = 0
    try:
        for _ in range(CATCH_UP_ROUNDS):
            if collection.replaced():
                raise _replaced_elsewhere(collection)
            seen = collection.revision()
            if seen == copied_at:
                break
            carried += catch_up(collection, staging, embedder)
            copied_at = seen
        else:
            raise RetrievalError(
                f"collection {collection.name!r} was written to throughout the re-embedding "
                f"(still after {CATCH_UP_ROUNDS} rounds of catching up); nothing was changed. "
                "Run the command again when ingestion into it pauses"
            )
    except BaseException as exc:
        explained = _explained(exc, collection, staging)
        if abandon is not None:
            abandon()
        if explained is not None:
            raise explained from exc
        raise
    try:
        store.replace_collection(collection.name, staging)
    except StagingDroppedError:
        if abandon is not None:
            abandon()  # what is this run's (the copy under the name is the other run's)
        raise
    return carried


def catch_up(collection: Collection, staging: Collection, embedder: Embedder) -> int:
    """Make the staging copy hold `collection`'s chunks as they are now: those added or changed
    (text or metadata) since it was copied are embedded with `embedder` and written, those
    removed are removed. The number of chunks carried over."""
    now = {chunk.id: chunk for chunk in collection.scan(with_text=True)}
    copied = {chunk.id: chunk for chunk in staging.scan(with_text=True)}
    gone = [chunk_id for chunk_id in copied if chunk_id not in now]
    changed = [
        chunk
        for chunk_id, chunk in now.items()
        if chunk_id not in copied
        or copied[chunk_id].text != chunk.text
        or _own(copied[chunk_id].metadata) != _own(chunk.metadata)
    ]
    _write_embedded(staging, changed, embedder)
    staging.delete(gone)
    return len(changed) + len(gone)


def _write_embedded(staging: Collection, chunks: Sequence[StoredChunk], embedder: Embedder) -> None:
    """Write `chunks` (text and metadata as stored) to the staging copy, embedded by
    `embedder` and marked as its."""
    if not chunks:
        return
    texts = [chunk.text or "" for chunk in chunks]
    staging.add(
        [
            ChunkRecord(
                chunk.id, text, {**chunk.metadata, EMBEDDING_MODEL_KEY: embedder.model_id}, vector
            )
            for chunk, text, vector in zip(chunks, texts, embedder.embed(texts), strict=True)
        ]
    )


def _own(metadata: Mapping[str, object]) -> dict[str, object]:
    """A chunk's metadata without the model that embedded it (the copy's differs)."""
    return {k: v for k, v in metadata.items() if k != EMBEDDING_MODEL_KEY}


def discard(store: VectorStore, staging: Collection, model_dir: Path | None) -> None:
    """Drop a staging copy (and the tuned model it was made with) that is not adopted."""
    store.delete_staging(staging)
    if model_dir is not None:
        shutil.rmtree(model_dir, ignore_errors=True)


@dataclass(frozen=True)
class PseudoScore:
    """Dense MRR@10 and recall@5 on held-out pseudo-queries."""

    mrr: float
    recall5: float
    queries: int


def held_out_queries(
    collection: Collection, lexical: LexicalIndex, count: int, seed: int
) -> list[PseudoQuery]:
    """Pseudo-queries (whole sentences: tuning learns from whole ones) kept out of training."""
    return pseudo_queries(collection, lexical, count, seed + 1, keep_words=1.0)


def excluded_chunks(queries: Sequence[PseudoQuery]) -> frozenset[str]:
    """The chunks training must not see: held-out queries' own chunks and their answers."""
    found: set[str] = set()
    for query in queries:
        found.add(query.chunk_id)
        found.update(query.targets)
    return frozenset(found)


def score_pseudo(
    collection: Collection,
    embedder: Embedder,
    queries: Sequence[PseudoQuery],
    lexical: LexicalIndex,
    max_exact: int,
) -> PseudoScore:
    """Dense retrieval of each held-out pseudo-query (its own chunk left out), ranked as search
    ranks (`DenseSearch`: exactly up to `max_exact` chunks; `lexical` gives the row order)."""
    vectors = embedder.embed_queries([q.text for q in queries])
    dense = DenseSearch(collection, max_exact)
    mrr = recall = 0.0
    for query, vector in zip(queries, vectors, strict=True):
        nearest = dense.nearest(lexical, vector, CUTOFF + 1)
        ranked = [i for i, _ in nearest if i != query.chunk_id][:CUTOFF]
        hits = [rank for rank, i in enumerate(ranked, start=1) if i in query.targets]
        if hits:
            mrr += 1.0 / hits[0]
            recall += 1.0 if hits[0] <= 5 else 0.0
    n = len(queries) or 1
    return PseudoScore(mrr / n, recall / n, len(queries))


def model_dir(settings: RetrievalSettings, model_id: str) -> Path:
    return tuned_model_dir(settings.data_dir, model_id)


MIN_HELD_OUT = 20
"""The fewest held-out pseudo-queries a tuned model is measured on."""


@dataclass(frozen=True)
class TuneOptions:
    steps: int = 60
    batch_size: int = 32
    learning_rate: float = 3e-5
    held_out: int = 200
    """Pseudo-queries kept out of training to measure on."""
    seed: int = 0


Metrics = dict[str, dict[str, float]]
"""Metrics per search mode (`eval retrieval`'s names)."""


@dataclass
class Trial:
    """A tuned model tried on a collection: the re-embedded staging copy and the measurements;
    `settle` adopts or discards it."""

    model_id: str
    training: Training
    staging: Collection
    folder: Path
    tuned: Embedder
    """The tuned model the staging copy is embedded with."""
    copied_at: str
    """The collection's revision when the staging copy began (see `adopt`)."""
    before: PseudoScore
    after: PseudoScore
    dev: tuple[Metrics, Metrics] | None = None
    """Labelled dev set metrics before and after, when one was given."""
    carried_over: int = 0
    """Chunks written to the collection during the trial and carried over when adopted."""

    @property
    def decided_on(self) -> str:
        return "dev set hybrid MRR@10" if self.dev else "held-out pseudo-queries MRR@10"

    @property
    def scores(self) -> tuple[float, float]:
        """(before, after) of what the decision rests on."""
        if self.dev:
            return self.dev[0]["hybrid"]["mrr@10"], self.dev[1]["hybrid"]["mrr@10"]
        return self.before.mrr, self.after.mrr

    @property
    def better(self) -> bool:
        """Measures no worse than the collection as it is."""
        old, new = self.scores
        return new >= old


Status = Callable[[str], None]


def try_tuned(
    store: VectorStore,
    target: Collection,
    configured: Embedder,
    settings: RetrievalSettings,
    indexes: LexicalIndexes,
    options: TuneOptions,
    qa: Sequence[QAItem] | None = None,
    status: Status | None = None,
    weighting: TurnWeighting = DEFAULT_WEIGHTING,
) -> Trial:
    """Tune the configured model on `target`'s chunks, re-embed a staging copy with it and
    measure both (held-out pseudo-queries; `qa` too when given, its conversations read as
    `weighting` says). The collection itself is not changed; on an error nothing is left
    behind."""
    say = status or (lambda _: None)
    lexical = indexes.current(target, save=False)
    held = held_out_queries(target, lexical, options.held_out, options.seed)
    if len(held) < MIN_HELD_OUT:
        raise RetrievalError(
            f"collection {target.name!r} gives only {len(held)} held-out pseudo-queries; "
            f"{MIN_HELD_OUT} are needed to measure a tuned embedder"
        )
    excluded = excluded_chunks(held)
    pairs = training_pairs(target, options.steps * options.batch_size, options.seed, excluded)
    if len(pairs) < options.batch_size and excluded:
        _check_held_out_leaves_a_batch(target, options, len(held), excluded, len(pairs))
    model_id = tuned_name(target.name)
    folder = model_dir(settings, model_id)
    training = Training(
        model_id, configured.model_id, target.name, target.revision(), len(pairs),
        options.steps, options.batch_size, options.learning_rate, options.seed,
    )  # fmt: skip
    current = collection_embedder(target, settings, configured)
    say(f"tuning on {len(pairs)} pairs of {target.name!r}...")
    staging: Collection | None = None
    try:
        # Whose it is, before anything else is written: a run killed from here on leaves a
        # folder `remove_orphaned_models` knows for this store's (no other store's).
        folder.mkdir(parents=True, exist_ok=True)
        (folder / STORE_MARK).write_text(store.location, "utf-8")
        fine_tune(
            settings.embedding_model, pairs, folder, training,
            lambda step, loss: say(f"tuning: step {step}/{options.steps}, loss {loss:.3f}"),
        )  # fmt: skip
        tuned = load_tuned_embedder(
            folder, model_id, settings.embedding_device, settings.embedding_batch_size
        )
        copied_at = target.revision()
        staging = reembed(
            store, target, tuned, configured.model_id,
            lambda done, total: say(f"re-embedding: {done}/{total} chunks"),
        )  # fmt: skip
        say("measuring before and after...")
        trial = Trial(
            model_id,
            training,
            staging,
            folder,
            tuned,
            copied_at,
            score_pseudo(target, current, held, lexical, settings.exact_search_max_chunks),
            score_pseudo(staging, tuned, held, lexical, settings.exact_search_max_chunks),
        )
        if qa is not None:
            trial.dev = (
                dev_metrics(target, current, indexes, settings, qa, weighting),
                dev_metrics(staging, tuned, indexes, settings, qa, weighting),
            )
        return trial
    except BaseException:
        if staging is not None:
            store.delete_staging(staging)
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _check_held_out_leaves_a_batch(
    target: Collection, options: TuneOptions, held: int, excluded: frozenset[str], pairs: int
) -> None:
    """Refuse, with what to lower, when the chunks kept out for measuring are what leaves too
    few training pairs (the collection alone would give a batch)."""
    if len(training_pairs(target, options.batch_size, options.seed)) < options.batch_size:
        return  # too few without them too: `fine_tune` says so
    fix = (
        f"Lower --held-out (now {options.held_out}; {MIN_HELD_OUT} at least) or --batch-size"
        if options.held_out > MIN_HELD_OUT
        else f"Lower --batch-size (--held-out is at its least, {MIN_HELD_OUT})"
    )
    raise RetrievalError(
        f"the {held} held-out pseudo-queries and their answers take {len(excluded)} of the "
        f"{target.count()} chunks of collection {target.name!r}, leaving {pairs} training "
        f"pairs; at least one batch ({options.batch_size}) is needed to tune the embedder. {fix}"
    )


def settle(
    store: VectorStore,
    target: Collection,
    trial: Trial,
    adopt_it: bool,
    indexes: LexicalIndexes,
    settings: RetrievalSettings,
) -> None:
    """Adopt the trial's staging copy in the place of `target` (the model it replaces, if it
    was a tuned one, is removed), or discard it and its model."""
    indexes.drop(trial.staging.name)
    if not adopt_it:
        discard(store, trial.staging, trial.folder)
        return
    trial.carried_over = adopt(
        store, target, trial.staging, trial.tuned, trial.copied_at,
        lambda: discard(store, trial.staging, trial.folder),
    )  # fmt: skip
    indexes.current(store.collection(target.name, trial.training.base_model), save=True)
    if is_tuned(target.embedding_model):
        shutil.rmtree(model_dir(settings, target.embedding_model), ignore_errors=True)


def revert(
    store: VectorStore,
    target: Collection,
    configured: Embedder,
    indexes: LexicalIndexes,
    settings: RetrievalSettings,
    status: Status | None = None,
) -> None:
    """Re-embed a collection tuned for with the configured model again; its tuned model is
    removed."""
    say = status or (lambda _: None)
    copied_at = target.revision()
    staging = reembed(
        store, target, configured, None, lambda done, total: say(f"re-embedding: {done}/{total}")
    )
    adopt(store, target, staging, configured, copied_at, lambda: discard(store, staging, None))
    indexes.drop(staging.name)
    indexes.current(store.collection(target.name, configured.model_id), save=True)
    shutil.rmtree(model_dir(settings, target.embedding_model), ignore_errors=True)


def dev_metrics(
    collection: Collection,
    embedder: Embedder,
    indexes: LexicalIndexes,
    settings: RetrievalSettings,
    qa: Sequence[QAItem],
    weighting: TurnWeighting = DEFAULT_WEIGHTING,
) -> Metrics:
    """Hybrid and dense metrics of `qa` on `collection` searched with `embedder`, as its
    searches run (a tuned collection's BM25 weight included: `Retriever.fusion`); an item
    given as a conversation is searched as the chat path searches it, as `eval retrieval`
    scores it (`conversation_searches`: its follow-up read with its topic, `weighting`)."""
    retriever = Retriever(collection, embedder, indexes, settings, save_lexical=False)
    modes = (SearchMode.HYBRID, SearchMode.DENSE)
    searches = conversation_searches(retriever, embedder, modes, weighting)
    report = evaluate_conversations(collection, qa, searches)
    return {m.mode: m.metrics for m in report.modes}
