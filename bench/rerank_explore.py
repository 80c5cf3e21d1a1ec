"""Model-free reranking, explored offline: can a stage after fusion that uses nothing but the
embedding model's vectors, the chunks' text and metadata and BM25 raise ragtune's hybrid
MRR@10 without lowering R@5 on every developers' set?

    .venv/bin/python bench/rerank_explore.py [--sets python,sqlite,git] [--out DIR]
        [--max-sentence]

Each set (small) is ingested once by `ragtune ingest`'s pipeline and kept under DIR (default
~/.cache/ragtune/rerank-explore/<set>); per question the dense and BM25 candidates (depth 50,
as search takes them), every chunk's vector, text and metadata, BM25 scores of every chunk and
the relevance labels are dumped to DIR/<set>.pkl. Every method then reorders the best `N` fused
candidates of the same dump, so each row is against the baseline of the same run (the fusion
of `retrieval.fusion` with the shipped weights, replayed). Knobs are the same for all sets; a
small sweep of each shows a plateau or a spike. The query-term coverage and proximity rows
set repeated texts aside as search does: compare them with the "collapse exact duplicates"
row. `--max-sentence` also embeds every sentence of the candidates, `--late-interaction`
every candidate's tokens (minutes on a CPU each).
`--bm25` replays search itself with BM25's parameters (k1, b) swept instead of the methods,
`--scaling` with other ways to scale each retriever's scores before fusion, `--expansion` with
BM25's query expanded from the first hits (pseudo-relevance feedback), `--headings` with a
heading path's (or title's) similarity to the question added to the fused score.
`--labelled-fusion` chooses fusion as `ragtune tune retrieval` does, but on each set's real
questions, k-fold: chosen on some, scored on the others.
"""

from __future__ import annotations

import argparse
import os
import pickle
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from functools import partial
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from bench.common import CACHE, DEV_SETS
from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.calibration import Choice, choose_fusion, fused_mrr
from ragtune.retrieval.dense import exact_nearest
from ragtune.retrieval.embedder import SentenceTransformerEmbedder
from ragtune.retrieval.evaluation import RelevanceJudge, load_qa
from ragtune.retrieval.lexical import LexicalIndex, LexicalIndexes, _stemmer, index_text
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import open_store

Dump = dict[str, Any]
Candidate = tuple[int, dict[str, float]]
"""(row of the chunk in the dump, its dense score `d`, ranks `dr`/`lr`, BM25 `l`, fused `f`)."""
Scorer = Callable[[Dump, int, list[Candidate]], np.ndarray]
SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")


def dump_set(name: str, out: Path, embedder: SentenceTransformerEmbedder, depth: int) -> Dump:
    path = out / f"{name}.pkl"
    if path.is_file():
        with path.open("rb") as f:
            cached: Dump = pickle.load(f)
        return cached
    data = DEV_SETS[name]("small")
    settings = RetrievalSettings(data_dir=out / name)
    with open_store(settings, "write") as store:
        indexes = LexicalIndexes.for_store(settings.data_dir, store)
        product = store.collection("ragtune", embedder.model_id, create=True)
        if product.count() == 0:
            print(f"{name}: ingesting", file=sys.stderr)
            IngestService(IngestSettings(), product, lambda: embedder, indexes).run(
                [data / "corpus"]
            )
        lexical = indexes.current(product)
        page = product._raw.get(include=["embeddings", "metadatas", "documents"])  # type: ignore[attr-defined]
        ids = list(page["ids"])
        texts = [t or "" for t in page["documents"]]
        qa = load_qa(data / "qa.json")
        judge = RelevanceJudge(qa)
        questions = [item.question for item in qa]
        qvecs = np.asarray(embedder.embed_queries(questions), dtype=np.float32)
        order = np.array([lexical.row_of[i] for i in ids])
        dense, lexi, bm25 = [], [], []
        for q, v in zip(questions, qvecs, strict=True):
            dense.append(product.nearest(v.tolist(), depth))
            lexi.append([(lexical.ids[h.row], h.score) for h in lexical.search(q, depth)])
            tokens = lexical._tokenize([q], lexical._stemmer)[0]
            scores = lexical._bm25.get_scores(tokens) if tokens else np.zeros(len(ids))  # type: ignore[union-attr]
            bm25.append(np.asarray(scores, dtype=np.float32)[order])
    result: Dump = {
        "ids": ids,
        "vectors": np.asarray(page["embeddings"], dtype=np.float32),
        "texts": texts,
        "metas": [dict(m or {}) for m in page["metadatas"]],
        "relevant": [sorted(judge.relevant_to(t)) for t in texts],
        "questions": questions,
        "qvecs": qvecs,
        "dense": dense,
        "lexical": lexi,
        "bm25": np.stack(bm25),
    }
    with path.open("wb") as f:
        pickle.dump(result, f)
    return result


def prepare(d: Dump, lexical_weight: float = 0.6) -> None:
    """Relevant rows per question, section keys, neighbours and the baseline fused order."""
    d["row"] = {i: n for n, i in enumerate(d["ids"])}
    d["rel"] = [set() for _ in d["questions"]]
    for n, questions in enumerate(d["relevant"]):
        for q in questions:
            d["rel"][q].add(n)
    d["doc"] = [str(m.get("doc_id")) for m in d["metas"]]
    d["sec"] = [(str(m.get("doc_id")), str(m.get("section"))) for m in d["metas"]]
    at = {(d["doc"][n], int(m.get("chunk_index", -1))): n for n, m in enumerate(d["metas"])}
    d["nb"] = [
        [
            r
            for o in (int(m.get("chunk_index", -1)) - 1, int(m.get("chunk_index", -1)) + 1)
            if (r := at.get((d["doc"][n], o))) is not None and d["sec"][r] == d["sec"][n]
        ]
        for n, m in enumerate(d["metas"])
    ]
    d["base"] = [baseline(d, q, lexical_weight) for q in range(len(d["questions"]))]


def baseline(
    d: Dump, qi: int, lexical_weight: float, scaling: tuple[str, str] = ("minmax", "best")
) -> list[Candidate]:
    """Search's hybrid order: score fusion (dense min-max, BM25 / best), ties by rank;
    `scaling` names other ways to bring each retriever's scores to 0..1 (see `scaled`)."""
    cand: dict[str, dict[str, float]] = {}
    dense = np.array([1 - dist for _, dist in d["dense"][qi]])
    for rank, ((cid, _), s, f) in enumerate(
        zip(d["dense"][qi], dense, scaled(dense, scaling[0]), strict=True), 1
    ):
        cand[cid] = {"d": float(s), "dr": rank, "f": float(f)}
    bm25 = np.array([s for _, s in d["lexical"][qi]])
    for rank, ((cid, s), f) in enumerate(
        zip(d["lexical"][qi], scaled(bm25, scaling[1]), strict=True), 1
    ):
        c = cand.setdefault(cid, {"f": 0.0})
        c["l"], c["lr"] = s, rank
        c["f"] += lexical_weight * float(f)
    order = sorted(
        cand, key=lambda i: (-cand[i]["f"], cand[i].get("dr", 51), cand[i].get("lr", 51))
    )
    return [(d["row"][i], cand[i]) for i in order]


def scaled(scores: np.ndarray, how: str) -> np.ndarray:
    """One retriever's candidate scores (best first) brought to a common range: `minmax` (what
    search does to cosine similarities), `best` (divided by the best: search's BM25), `raw`,
    `topN` (min-max over the best N, anything lower 0) or `floorN` (the Nth best subtracted,
    then divided by the best, anything lower 0: a list whose best stands far above its Nth
    counts more than a flat one)."""
    if scores.size == 0 or how == "raw":
        return scores
    top = scores.max()
    if how == "best":
        return scores / top if top > 0 else np.zeros_like(scores)
    if how.startswith("floor"):
        floor = scores[min(int(how[5:]), scores.size) - 1]
        return np.clip((scores - floor) / top, 0, None) if top > 0 else np.zeros_like(scores)
    low = scores.min() if how == "minmax" else scores[min(int(how[3:]), scores.size) - 1]
    return np.clip((scores - low) / (top - low), 0, None) if top > low else np.ones_like(scores)


def metrics(d: Dump, ranked: list[list[int]]) -> tuple[float, float]:
    first = first_relevant(d, ranked)
    r5 = sum(k <= 5 for k in first)
    mrr = sum(1 / k for k in first if k <= 10)
    return r5 / len(ranked), mrr / len(ranked)


def first_relevant(d: Dump, ranked: list[list[int]]) -> list[int]:
    """Each question's rank of its first relevant hit in the first ten (11: none)."""
    return [
        next((k for k, r in enumerate(rows[:10], 1) if r in d["rel"][qi]), 11)
        for qi, rows in enumerate(ranked)
    ]


def minmax(x: np.ndarray) -> np.ndarray:
    return (x - x.min()) / (x.max() - x.min()) if x.max() > x.min() else np.zeros_like(x)


def fused(cands: list[Candidate]) -> np.ndarray:
    return np.array([c["f"] for _, c in cands])


def rows_of(cands: list[Candidate]) -> list[int]:
    return [r for r, _ in cands]


# The methods: each scores the best N fused candidates of one question (higher is better).


def rocchio(d: Dump, qi: int, cands: list[Candidate], a: float, m: int) -> np.ndarray:
    """Pseudo-relevance feedback: q' = q + a * mean of the best m candidates' vectors; the
    dense share is recomputed with q' (min-max over the candidates), BM25's is kept."""
    v = d["vectors"][rows_of(cands)]
    q = d["qvecs"][qi] + a * v[:m].mean(0)
    best = max((s for _, s in d["lexical"][qi]), default=0.0)
    lexical = d["bm25"][qi][rows_of(cands)] / best if best > 0 else np.zeros(len(cands))
    return np.asarray(minmax(v @ (q / np.linalg.norm(q))) + 0.6 * lexical)


def rocchio_added(
    d: Dump, qi: int, cands: list[Candidate], a: float, m: int, g: float
) -> np.ndarray:
    """Fused score + g * similarity to the feedback query q' (min-max over the candidates)."""
    v = d["vectors"][rows_of(cands)]
    q = d["qvecs"][qi] + a * v[:m].mean(0)
    return np.asarray(fused(cands) + g * minmax(v @ q))


def completed(
    d: Dump, qi: int, cands: list[Candidate], lw: float, dense: bool, lexical: bool
) -> np.ndarray:
    """Fusion again, with the score a retriever did not report (outside its top 50) filled in:
    the exact cosine similarity, the BM25 score of that chunk."""
    rows = rows_of(cands)
    cos = d["vectors"][rows] @ d["qvecs"][qi]
    listed = [1 - dist for _, dist in d["dense"][qi]]
    low, high = min(listed), max(listed)
    best = max((s for _, s in d["lexical"][qi]), default=0.0)
    out = []
    for n, (r, c) in enumerate(cands):
        ds = c.get("d", cos[n] if dense else None)
        ls = c.get("l", d["bm25"][qi][r] if lexical else None)
        dn = 0.0 if ds is None else (ds - low) / (high - low) if high > low else 1.0
        ln = 0.0 if ls is None or best <= 0 else ls / best
        out.append(dn + lw * ln)
    return np.array(out)


def same_group(d: Dump, qi: int, cands: list[Candidate], g: float, key: str) -> np.ndarray:
    """Document or section evidence: + g * the best fused score of another candidate of the
    same document (`doc`) or section (`sec`)."""
    f = fused(cands)
    keys = [d[key][r] for r, _ in cands]
    bonus = [
        max((f[j] for j, k in enumerate(keys) if j != i and k == keys[i]), default=0.0)
        for i in range(len(f))
    ]
    return np.asarray(f + g * np.array(bonus))


def neighbours(d: Dump, qi: int, cands: list[Candidate], g: float) -> np.ndarray:
    """Context: + g * (best cosine of a neighbouring chunk of the same section - own cosine)."""
    q = d["qvecs"][qi]
    out = fused(cands).copy()
    for n, r in enumerate(rows_of(cands)):
        if d["nb"][r]:
            out[n] += g * (float((d["vectors"][d["nb"][r]] @ q).max()) - float(d["vectors"][r] @ q))
    return out


def centroid(d: Dump, qi: int, cands: list[Candidate], g: float, m: int) -> np.ndarray:
    """Agreement: + g * similarity to the centroid of the best m candidates (min-max)."""
    v = d["vectors"][rows_of(cands)]
    return np.asarray(fused(cands) + g * minmax(v @ v[:m].mean(0)))


def length_prior(d: Dump, qi: int, cands: list[Candidate], g: float) -> np.ndarray:
    """+ g * log(1 + words): longer passages hold answers more often."""
    words = np.array([len(d["texts"][r].split()) for r in rows_of(cands)])
    return np.asarray(fused(cands) + g * np.log1p(words))


def z_fusion(d: Dump, qi: int, cands: list[Candidate], lw: float) -> np.ndarray:
    """Fusion by score gaps: each retriever's scores as z-scores over its own 50 (a chunk a
    retriever did not list gets that list's lowest)."""
    dl = np.array([1 - x for _, x in d["dense"][qi]])
    ll = np.array([x for _, x in d["lexical"][qi]] or [0.0])
    out = []
    for _, c in cands:
        ds, ls = c.get("d", dl.min()), c.get("l", ll.min())
        out.append((ds - dl.mean()) / (dl.std() + 1e-9) + lw * (ls - ll.mean()) / (ll.std() + 1e-9))
    return np.array(out)


def mmr(d: Dump, qi: int, cands: list[Candidate], lam: float) -> np.ndarray:
    """Maximal marginal relevance: greedily, fused - lam * max similarity to those chosen."""
    f = fused(cands)
    v = d["vectors"][rows_of(cands)]
    sim = v @ v.T
    left, chosen = list(range(len(f))), list[int]()
    while left:
        pen = (
            sim[np.ix_(np.array(left), np.array(chosen))].max(1) if chosen else np.zeros(len(left))
        )
        chosen.append(left.pop(int(np.argmax(f[left] - lam * pen))))
    score = np.empty(len(f))
    score[chosen] = -np.arange(len(f), dtype=float)
    return score


def max_sentence(d: Dump, qi: int, cands: list[Candidate], g: float) -> np.ndarray:
    """+ g * the best cosine of one of the chunk's sentences (min-max over the candidates)."""
    q = d["qvecs"][qi]
    best = np.array([float((d["sentences"][r] @ q).max()) for r in rows_of(cands)])
    return np.asarray(fused(cands) + g * minmax(best))


def late_interaction(d: Dump, qi: int, cands: list[Candidate], g: float) -> np.ndarray:
    """+ g * MaxSim with the embedding model's own token vectors (each question token's best
    cosine with a token of the heading and chunk, averaged; min-max over the candidates)."""
    q = d["query_tokens"][qi]
    best = np.array([float((q @ d["tokens"][r].T).max(1).mean()) for r in rows_of(cands)])
    return np.asarray(fused(cands) + g * minmax(best))


def query_terms(d: Dump) -> tuple[list[list[str]], dict[str, float]]:
    """Each question's word stems as BM25 reads them (in order, once each) and every stem's
    inverse document frequency over the dump's chunks (BM25's, +1 inside the log)."""
    if "idf" not in d:
        stems = stems_of(d)
        df = Counter(t for chunk in stems for t in set(chunk))
        n = len(stems)
        d["idf"] = {t: float(np.log(1 + (n - c + 0.5) / (c + 0.5))) for t, c in df.items()}
        questions = LexicalIndex._tokenize(d["questions"], _stemmer())
        d["qstems"] = [list(dict.fromkeys(q)) for q in questions]
    return d["qstems"], d["idf"]


def positions(d: Dump, row: int) -> dict[str, list[int]]:
    """Where each stem occurs in a chunk's stems (cached per dump; read it, do not change it)."""
    cache = d.setdefault("positions", {})
    if row not in cache:
        where: dict[str, list[int]] = {}
        for i, stem in enumerate(stems_of(d)[row]):
            where.setdefault(stem, []).append(i)
        cache[row] = where
    return cache[row]


def coverage(d: Dump, qi: int, cands: list[Candidate], g: float) -> np.ndarray:
    """+ g * the share of the question's stems (weighted by idf) that the chunk holds at all."""
    questions, idf = query_terms(d)
    total = sum(idf.get(t, 0.0) for t in questions[qi]) or 1.0
    held = [
        sum(idf.get(t, 0.0) for t in questions[qi] if t in where) / total
        for where in (positions(d, r) for r in rows_of(cands))
    ]
    return np.asarray(fused(cands) + g * np.array(held))


def proximity(d: Dump, qi: int, cands: list[Candidate], g: float, adjacent: bool) -> np.ndarray:
    """+ g * term proximity (BM25TP's pair score: idf_a * idf_b / distance^2 for each pair of
    the question's stems, at their closest in the chunk; `adjacent`: only pairs next to each
    other in the question), divided by the best candidate's."""
    questions, idf = query_terms(d)
    q = questions[qi]
    pairs = list(pairwise(q)) if adjacent else list(combinations(q, 2))
    total = sum(idf.get(a, 0.0) * idf.get(b, 0.0) for a, b in pairs) or 1.0
    scores = []
    for r in rows_of(cands):
        where, score = positions(d, r), 0.0
        for a, b in pairs:
            if a in where and b in where:
                gap = int(np.abs(np.subtract.outer(where[a], where[b])).min())
                score += idf[a] * idf[b] / max(gap, 1) ** 2
        scores.append(score / total)
    close = np.array(scores)
    return np.asarray(fused(cands) + g * (close / close.max() if close.max() > 0 else close))


def reordered(d: Dump, scorer: Scorer | None, depth: int, collapse: bool) -> list[list[int]]:
    """Each question's best `depth` candidates reordered by `scorer` (none: as fused); with
    `collapse`, a candidate whose text repeats a better one's (words, case aside) goes after
    the `depth` (its relevance is the same by construction)."""
    ranked = []
    for qi, cands in enumerate(d["base"]):
        rows = rows_of(cands)
        top = rows[:depth]
        if scorer is not None:
            score = scorer(d, qi, cands[:depth])
            top = [top[i] for i in np.argsort(-score, kind="stable")]
        if collapse:
            seen: set[str] = set()
            kept, repeated = list[int](), list[int]()
            for r in top:
                key = " ".join(re.findall(r"\w+", d["texts"][r].lower()))
                (repeated if key in seen else kept).append(r)
                seen.add(key)
            top = kept + repeated
        ranked.append(top + rows[depth:])
    return ranked


def rerank(d: Dump, scorer: Scorer | None, depth: int, collapse: bool) -> tuple[float, float]:
    return metrics(d, reordered(d, scorer, depth, collapse))


def stems_of(d: Dump) -> list[list[str]]:
    """Every chunk's word stems as search's BM25 reads them (heading path and chunk; stop
    words out), tokenized once per dump."""
    if "stems" not in d:
        texts = [index_text(m, t) for m, t in zip(d["metas"], d["texts"], strict=True)]
        d["stems"] = LexicalIndex._tokenize(texts, _stemmer())
    return list(d["stems"])


def bm25_over(d: Dump, k1: float = 1.5, b: float = 0.75) -> Any:
    """bm25s over the dump's chunks with parameters `k1` and `b` (search ships bm25s' defaults,
    k1 1.5 and b 0.75)."""
    import bm25s

    bm25 = bm25s.BM25(k1=k1, b=b)
    bm25.index(stems_of(d), show_progress=False)
    return bm25


def bm25_candidates(d: Dump, k1: float, b: float, depth: int) -> list[list[tuple[str, float]]]:
    """Each question's BM25 candidates, found by search's own `LexicalIndex` over the dump's
    chunks with bm25s' parameters `k1` and `b` (`bm25_over`)."""
    index = LexicalIndex("sweep", d["ids"], [{} for _ in d["ids"]], bm25_over(d, k1, b))
    return [
        [(d["ids"][hit.row], hit.score) for hit in index.search(question, depth)]
        for question in d["questions"]
    ]


def exact_dense(d: Dump, depth: int) -> list[list[tuple[str, float]]]:
    """Each question's dense candidates as search ranks them below `exact_search_max_chunks`
    (`exact_nearest`: every stored vector compared), as (id, cosine distance) like the dump's."""
    matrix = d["vectors"] / np.linalg.norm(d["vectors"], axis=1, keepdims=True)
    return [
        [(d["ids"][row], distance) for row, distance in exact_nearest(matrix, query, depth)]
        for query in d["qvecs"]
    ]


def hybrid_order(
    d: Dump,
    lexical: list[list[tuple[str, float]]] | None = None,
    scaling: tuple[str, str] = ("minmax", "best"),
    lexical_weight: float = 0.6,
) -> list[list[int]]:
    """Search's hybrid ranking replayed: exact dense candidates (`d["exact"]`), the dump's
    BM25 candidates or `lexical`, score fusion, repeats collapsed."""
    swept = dict(d, dense=d["exact"], lexical=d["lexical"] if lexical is None else lexical)
    swept["base"] = [
        baseline(swept, qi, lexical_weight, scaling) for qi in range(len(d["questions"]))
    ]
    return reordered(swept, None, 20, True)


def sweep(
    dumps: dict[str, Dump],
    knob: str,
    settings: Sequence[tuple[str, Callable[[str], list[list[int]]]]],
) -> None:
    """One line per setting: R@5 / MRR@10 on every set and how many questions' first relevant
    hit moved up and down against search as shipped (`hybrid_order` with its defaults)."""
    for d in dumps.values():
        d.setdefault("exact", exact_dense(d, 50))
    shipped = {name: first_relevant(d, hybrid_order(d)) for name, d in dumps.items()}
    print(f"{knob:<24} " + " ".join(f"{n + ' R@5/MRR@10 (up/down)':>30}" for n in dumps))
    for label, ranked in settings:
        cells = []
        for name, d in dumps.items():
            order = ranked(name)
            first = first_relevant(d, order)
            up = sum(f < s for f, s in zip(first, shipped[name], strict=True))
            down = sum(f > s for f, s in zip(first, shipped[name], strict=True))
            r5, mrr = metrics(d, order)
            cells.append(f"{r5:.3f}/{mrr:.3f} ({up}/{down})")
        print(f"{label:<24} " + " ".join(f"{c:>30}" for c in cells), flush=True)


def bm25_sweep(dumps: dict[str, Dump]) -> None:
    """BM25's own parameters swept (search ships bm25s' defaults, k1 1.5 and b 0.75)."""

    def ranked(name: str, k1: float, b: float) -> list[list[int]]:
        return hybrid_order(dumps[name], bm25_candidates(dumps[name], k1, b, 50))

    grid = [(k1, b) for k1 in (0.9, 1.2, 1.5, 2.0) for b in (0.2, 0.4, 0.6, 0.75, 0.9)]
    sweep(dumps, "BM25 k1 / b", [(f"{k1} / {b}", partial(ranked, k1=k1, b=b)) for k1, b in grid])


def scaling_sweep(dumps: dict[str, Dump]) -> None:
    """How each retriever's scores are brought to 0..1 before the weighted sum, and the BM25
    weight with it (search: dense min-max, BM25 / best, 0.6)."""

    def ranked(name: str, dense: str, lexical: str, weight: float) -> list[list[int]]:
        return hybrid_order(dumps[name], scaling=(dense, lexical), lexical_weight=weight)

    pairs = [("minmax", "best"), ("top10", "best"), ("top20", "best"), ("minmax", "minmax")]
    pairs += [("top20", "top20"), ("minmax", "top20")]
    grid = [(d, lex, w) for d, lex in pairs for w in (0.4, 0.5, 0.6, 0.7, 0.8)]
    grid += [(d, "best", w) for d in ("best", "raw") for w in (0.1, 0.15, 0.2, 0.3)]
    grid += [("minmax", f"floor{n}", w) for n in (10, 20, 30, 50) for w in (0.8, 1.0, 1.2)]
    settings = [
        (f"{d} / {lex}, {w}", partial(ranked, dense=d, lexical=lex, weight=w)) for d, lex, w in grid
    ]
    sweep(dumps, "dense / BM25 scaling, w", settings)


def expanded_bm25(
    d: Dump, feedback: int, terms: int, share: float
) -> list[list[tuple[str, float]]]:
    """BM25 candidates for each question with its query expanded from pseudo-relevance
    feedback (RM3's idea, no model): the `feedback` best hybrid hits' word stems, each weighted
    by its share of a hit's words times its idf and by the hit's fused score; the best `terms`
    stems not in the question join it, together weighing `share` of the question's own."""
    if "query_stems" not in d:
        d["bm25"] = bm25_over(d)
        counts = Counter(t for stems in stems_of(d) for t in set(stems))
        n = len(d["stems"])
        d["idf"] = {t: float(np.log((n - c + 0.5) / (c + 0.5) + 1)) for t, c in counts.items()}
        d["query_stems"] = [LexicalIndex._tokenize([q], _stemmer())[0] for q in d["questions"]]
        d["per_stem"] = {}
        exact = dict(d, dense=d["exact"])
        d["fused"] = [baseline(exact, qi, 0.6) for qi in range(len(d["questions"]))]

    def stem_scores(stem: str) -> np.ndarray:
        if stem not in d["per_stem"]:
            d["per_stem"][stem] = np.asarray(d["bm25"].get_scores([stem]))
        scores: np.ndarray = d["per_stem"][stem]
        return scores

    lists = []
    for qi, query in enumerate(d["query_stems"]):
        weights = Counter(query)
        best = d["fused"][qi][:feedback]
        total = sum(c["f"] for _, c in best) or 1.0
        pool: Counter[str] = Counter()
        for row, c in best:
            stems = d["stems"][row]
            for stem, count in Counter(stems).items():
                if stem not in weights:
                    pool[stem] += c["f"] / total * count / len(stems) * d["idf"].get(stem, 0.0)
        chosen = pool.most_common(terms)
        mass = sum(v for _, v in chosen) or 1.0
        expanded = {t: float(w) for t, w in weights.items()}
        for stem, value in chosen:
            expanded[stem] = share * len(query) * value / mass
        scores = sum((w * stem_scores(t) for t, w in expanded.items()), np.zeros(len(d["ids"])))
        top = np.argsort(-scores, kind="stable")[:50]
        lists.append([(d["ids"][r], float(scores[r])) for r in top if scores[r] > 0])
    return lists


def expansion_sweep(dumps: dict[str, Dump]) -> None:
    """BM25's query expanded from the first hybrid hits (`expanded_bm25`), swept."""

    def ranked(name: str, hits: int, terms: int, share: float) -> list[list[int]]:
        return hybrid_order(dumps[name], expanded_bm25(dumps[name], hits, terms, share))

    grid = [(k, m, s) for k in (3, 5, 10) for m in (5, 10, 20) for s in (0.1, 0.2, 0.4)]
    settings = [(f"{k}, {m}, {s}", partial(ranked, hits=k, terms=m, share=s)) for k, m, s in grid]
    sweep(dumps, "feedback hits, stems, share", settings)


def heading_sweep(dumps: dict[str, Dump], embedder: SentenceTransformerEmbedder) -> None:
    """A chunk's heading path (or its page's title) embedded apart, its cosine with the
    question added to the fused score of the best 20 candidates (min-max over them, or raw)."""
    for d in dumps.values():
        d.setdefault("exact", exact_dense(d, 50))
        d["exact_base"] = [
            baseline(dict(d, dense=d["exact"]), qi, 0.6) for qi in range(len(d["questions"]))
        ]
        for key in ("heading", "title"):
            values = [str(m.get(key, "")) for m in d["metas"]]
            unique = sorted(set(values))
            vectors = embedder._model.encode(unique, batch_size=64, normalize_embeddings=True)
            at = {value: n for n, value in enumerate(unique)}
            d[f"{key}_vectors"] = vectors[[at[v] for v in values]]

    def ranked(name: str, key: str, how: str, g: float) -> list[list[int]]:
        def scorer(d: Dump, qi: int, cands: list[Candidate]) -> np.ndarray:
            similarity = d[f"{key}_vectors"][rows_of(cands)] @ d["qvecs"][qi]
            return np.asarray(
                fused(cands) + g * (minmax(similarity) if how == "minmax" else similarity)
            )

        d = dumps[name]
        return reordered(dict(d, base=d["exact_base"]), scorer, 20, True)

    grid = [
        (k, h, g)
        for k in ("heading", "title")
        for h in ("minmax", "raw")
        for g in (0.05, 0.1, 0.2, 0.3, 0.5)
    ]
    settings = [(f"{k} {h} {g}", partial(ranked, key=k, how=h, g=g)) for k, h, g in grid]
    sweep(dumps, "headings, scaling, g", settings)


def methods(with_sentences: bool, with_tokens: bool) -> list[tuple[str, Scorer | None, int, bool]]:
    """(label, scorer, depth, collapse duplicates) of every row."""
    rows: list[tuple[str, Scorer | None, int, bool]] = [("baseline (fused)", None, 20, False)]
    rows.append(("collapse exact duplicates", None, 20, True))
    for n in (10, 20, 30):
        for a in (0.3, 0.5, 1.0):
            for m in (1, 3, 5):
                rows.append(
                    (
                        f"rocchio N={n} a={a} m={m}",
                        partial(rocchio, a=a, m=m),
                        n,
                        False,
                    )
                )
    for g in (0.3, 0.5, 1.0):
        for a in (0.5, 1.0):
            rows.append(
                (
                    f"rocchio added g={g} a={a} m=3",
                    partial(rocchio_added, a=a, m=3, g=g),
                    20,
                    False,
                )
            )
    for lw in (0.4, 0.6, 0.8):
        for dense, lexical, label in (
            (True, False, "dense"),
            (False, True, "bm25"),
            (True, True, "both"),
        ):
            rows.append(
                (
                    f"completed {label} lw={lw}",
                    partial(completed, lw=lw, dense=dense, lexical=lexical),
                    20,
                    False,
                )
            )
    for key in ("doc", "sec"):
        for g in (0.1, 0.2, 0.3):
            rows.append(
                (
                    f"same {key} g={g}",
                    partial(same_group, g=g, key=key),
                    20,
                    False,
                )
            )
    for g in (0.1, 0.3, 0.5):
        rows.append((f"neighbours g={g}", partial(neighbours, g=g), 20, False))
    for m in (3, 5, 10):
        for g in (0.1, 0.3, 0.5):
            rows.append(
                (
                    f"centroid m={m} g={g}",
                    partial(centroid, g=g, m=m),
                    20,
                    False,
                )
            )
    for g in (0.05, 0.1, 0.2):
        rows.append((f"length prior g={g}", partial(length_prior, g=g), 20, False))
    for lw in (0.4, 0.6, 0.8, 1.0):
        rows.append((f"z-score fusion lw={lw}", partial(z_fusion, lw=lw), 60, False))
    for lam in (0.1, 0.2, 0.3, 0.5):
        rows.append((f"mmr lambda={lam}", partial(mmr, lam=lam), 20, False))
    for g in (0.05, 0.1, 0.2, 0.3, 0.5):
        rows.append((f"query-term coverage g={g}", partial(coverage, g=g), 20, True))
    for adjacent, label in ((False, "all pairs"), (True, "adjacent pairs")):
        for g in (0.05, 0.1, 0.2, 0.3, 0.5):
            row = (f"proximity {label} g={g}", partial(proximity, g=g, adjacent=adjacent), 20, True)
            rows.append(row)
    for g in (0.2, 0.5, 1.0) if with_sentences else ():
        rows.append((f"max sentence g={g}", partial(max_sentence, g=g), 20, False))
    for g in (0.1, 0.2, 0.3, 0.5, 1.0) if with_tokens else ():
        rows.append(
            (
                f"late interaction g={g}",
                partial(late_interaction, g=g),
                20,
                False,
            )
        )
    rows.append(
        (
            "collapse + completed both lw=0.6",
            partial(completed, lw=0.6, dense=True, lexical=True),
            20,
            True,
        )
    )
    return rows


def labelled_fusion_sweep(dumps: dict[str, Dump]) -> None:
    """Fusion chosen per collection on labelled questions instead of pseudo-queries: the
    calibration's grid and choice (`calibration.choose_fusion`), k-fold: chosen on the other
    folds' questions, scored (MRR@10, `calibration.fused_mrr`) on the fold held out, against the
    shipped default on the same questions. Would a collection with a few labelled questions do
    better to choose its own fusion on them?"""
    defaults = RetrievalSettings()
    default: Choice = (defaults.fusion, defaults.lexical_weight, defaults.rrf_k)
    print(f"{'set':<8} {'folds':>5} {'seed':>4} {'default':>8} {'chosen':>8}  chosen per fold")
    for name, d in dumps.items():
        runs = [
            (
                {cid: (r, 1 - dist) for r, (cid, dist) in enumerate(d["dense"][q], 1)},
                {cid: (r, score) for r, (cid, score) in enumerate(d["lexical"][q], 1)},
                frozenset(d["ids"][row] for row in d["rel"][q]),
            )
            for q in range(len(d["questions"]))
        ]
        best, mrr, at_default = choose_fusion(runs, defaults)
        line = f"{name:<8} {'all':>5} {'':>4} {at_default:8.3f} {mrr:8.3f}"
        print(f"{line}  {_choice(best)} (chosen on the questions it is scored on)")
        for folds in (2, 5):
            for seed in range(3):
                order = list(range(len(runs)))
                random.Random(seed).shuffle(order)
                chosen = shipped = 0.0
                picks = []
                for fold in range(folds):
                    held = set(order[fold::folds])
                    train = [run for n, run in enumerate(runs) if n not in held]
                    test = [runs[n] for n in sorted(held)]
                    choice = choose_fusion(train, defaults)[0]
                    picks.append(_choice(choice))
                    chosen += fused_mrr(test, choice) * len(test)
                    shipped += fused_mrr(test, default) * len(test)
                line = f"{name:<8} {folds:>5} {seed:>4} {shipped / len(runs):8.3f}"
                print(f"{line} {chosen / len(runs):8.3f}  {', '.join(picks)}", flush=True)


def _choice(choice: Choice) -> str:
    method, lexical_weight, rrf_k = choice
    return f"rrf {lexical_weight}/{rrf_k}" if method == "rrf" else f"score {lexical_weight}"


def embed_sentences(d: Dump, embedder: SentenceTransformerEmbedder, depth: int) -> None:
    rows = sorted({r for cands in d["base"] for r, _ in cands[:depth]})
    parts = {
        r: [p for p in SENTENCE.split(d["texts"][r]) if len(p.split()) >= 3] or [d["texts"][r]]
        for r in rows
    }
    flat = [p.strip() for r in rows for p in parts[r]]
    vectors = embedder._model.encode(flat, batch_size=64, normalize_embeddings=True)
    d["sentences"], at = {}, 0
    for r in rows:
        d["sentences"][r] = vectors[at : at + len(parts[r])]
        at += len(parts[r])


def embed_tokens(d: Dump, embedder: SentenceTransformerEmbedder, depth: int) -> None:
    """Token vectors (unit length, special tokens dropped) of the questions and of every
    candidate as it was embedded (heading line and text)."""

    def unit(vectors: Any) -> np.ndarray:
        array = vectors.numpy()[1:-1]
        return np.asarray(array / np.linalg.norm(array, axis=1, keepdims=True))

    rows = sorted({r for cands in d["base"] for r, _ in cands[:depth]})
    texts = []
    for r in rows:
        heading = str(d["metas"][r].get("heading", ""))
        texts.append(f"{heading}\n{d['texts'][r]}" if heading else d["texts"][r])
    model = embedder._model
    chunks = model.encode(texts, output_value="token_embeddings", batch_size=32)
    d["tokens"] = {r: unit(t) for r, t in zip(rows, chunks, strict=True)}
    questions = model.encode(d["questions"], output_value="token_embeddings", batch_size=64)
    d["query_tokens"] = [unit(t) for t in questions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sets", default="python,sqlite,git")
    parser.add_argument("--out", type=Path, default=CACHE / "rerank-explore")
    parser.add_argument("--max-sentence", action="store_true")
    parser.add_argument("--late-interaction", action="store_true")
    parser.add_argument(
        "--bm25", action="store_true", help="sweep BM25's k1 and b instead of the methods"
    )
    parser.add_argument(
        "--scaling", action="store_true", help="sweep fusion's score scaling instead"
    )
    parser.add_argument(
        "--expansion", action="store_true", help="sweep BM25 query expansion instead"
    )
    parser.add_argument(
        "--headings", action="store_true", help="sweep a heading-similarity signal instead"
    )
    parser.add_argument(
        "--labelled-fusion",
        action="store_true",
        help="choose fusion on labelled questions (k-fold) instead",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    names = [n for n in args.sets.split(",") if n]
    dumps = {name: dump_set(name, args.out, embedder, 50) for name in names}
    for d in dumps.values():
        prepare(d)
        if args.max_sentence:
            embed_sentences(d, embedder, 20)
        if args.late_interaction:
            embed_tokens(d, embedder, 20)
    sweeps = {
        "bm25": bm25_sweep,
        "scaling": scaling_sweep,
        "expansion": expansion_sweep,
        "labelled_fusion": labelled_fusion_sweep,
    }
    chosen = [run for flag, run in sweeps.items() if getattr(args, flag)]
    for run in chosen:
        run(dumps)
    if args.headings:
        heading_sweep(dumps, embedder)
    if chosen or args.headings:
        return
    print(f"{'method':<36} " + " ".join(f"{n + ' R@5/MRR@10':>24}" for n in names))
    base = {n: rerank(d, None, 20, False) for n, d in dumps.items()}
    for label, scorer, depth, collapse in methods(args.max_sentence, args.late_interaction):
        cells = []
        for name, d in dumps.items():
            r5, mrr = rerank(d, scorer, depth, collapse)
            b5, bm = base[name]
            cells.append(f"{r5:.3f}/{mrr:.3f} ({r5 - b5:+.3f}/{mrr - bm:+.3f})")
        print(f"{label:<36} " + " ".join(f"{c:>24}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
