"""`ragtune search`: ranked chunks with their sources, in a terminal or as JSON."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel

from ragtune.cli.settings import command_settings
from ragtune.cli.show import data
from ragtune.retrieval.embedder import LazyEmbedder, collection_embedder, model_id_for
from ragtune.retrieval.filters import SearchFilter
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.rerank import load_reranker
from ragtune.retrieval.search import Retriever, SearchHit, SearchMode
from ragtune.retrieval.store import open_store

stdout = Console()


def search(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="What to look for, in plain words.")],
    k: Annotated[int, typer.Option("-k", min=1, max=100, help="How many hits.")] = 5,
    mode: Annotated[
        SearchMode | None,
        typer.Option("--mode", help="hybrid (dense + BM25, fused), dense or lexical."),
    ] = None,
    filters: Annotated[
        list[str] | None,
        typer.Option(
            "--filter",
            "-f",
            help="source=PATH-OR-GLOB, section=PATH or a --meta KEY=VALUE (repeatable).",
        ),
    ] = None,
    neighbours: Annotated[
        int, typer.Option("--neighbours", "-n", min=0, max=5, help="Add adjacent chunks.")
    ] = 0,
    collection: Annotated[
        str | None, typer.Option("--collection", "-c", help="Collection to search.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Search a collection and show the best chunks with their sources.

    Example: ragtune search "How do I read a file line by line?" -k 3 --filter source=tutorial/
    """
    if not question.strip():
        # Nothing to rank by: dense search would return arbitrary chunks, BM25 none.
        raise typer.BadParameter(
            'the question is empty: give the words to look for, e.g. ragtune search "sick leave"',
            param_hint="QUESTION",
        )
    settings = command_settings(ctx).retrieval_for(collection)
    search_filter = SearchFilter.parse(filters or [])
    mode = mode or SearchMode(settings.search_mode)
    # Hybrid search alone reranks: a dense or lexical one never waits for the reranker.
    reranker = load_reranker(settings) if mode == SearchMode.HYBRID else None
    with open_store(settings, "read") as store:
        target = store.collection(settings.collection, model_id_for(settings.embedding_model))
        retriever = Retriever(
            target,
            # Loaded only if the search embeds: a lexical one never waits for the model.
            LazyEmbedder(lambda: collection_embedder(target, settings)),
            LexicalIndexes.for_store(settings.data_dir, store),
            settings,
            reranker=reranker,
        )
        hits = retriever.search(
            question,
            k,
            mode,
            search_filter,
            neighbours=neighbours,
        )
        fusion = retriever.fusion_summary()
    if as_json:
        # Each hit says which fusion ranked it (the collection's calibration or defaults).
        found = [{**asdict(h), "fusion": fusion} for h in hits]
        stdout.print_json(json.dumps(_finite(found), allow_nan=False))
        return
    if not hits:
        stdout.print(f"no results in collection {settings.collection!r}")
    for hit in hits:
        stdout.print(hit_panel(hit))


def reflow(text: str) -> str:
    """Join a paragraph's hard-wrapped lines for the terminal; keep indented (code) lines."""
    lines = text.split("\n")
    out: list[str] = []
    for line in lines:
        joinable = out and out[-1].strip() and line.strip() and not line[0].isspace()
        if joinable and not out[-1][:1].isspace():
            out[-1] = f"{out[-1].rstrip()} {line.strip()}"
        else:
            out.append(line)
    return "\n".join(out)


def _finite(value: Any) -> Any:
    """`value` with every NaN or infinite number as None (JSON's null): strict JSON readers
    refuse NaN and Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def hit_panel(hit: SearchHit) -> Panel:
    where = hit.source + (f" · {hit.section}" if hit.section else "")
    scores = []
    if hit.dense_rank is not None:
        scores.append(f"dense #{hit.dense_rank} {hit.dense_score:.3f}")
    if hit.lexical_rank is not None:
        scores.append(f"bm25 #{hit.lexical_rank} {hit.lexical_score:.2f}")
    if hit.rerank_score is not None:
        scores.append(f"rerank {hit.rerank_score:.3f}")
    # Documents' text, paths and headings are data, never markup ("list[int]", "[/x]").
    return Panel(
        data(reflow(hit.context or hit.text)),
        title=data(f"[{hit.rank}] {where}"),
        subtitle=data(f"{' · '.join(scores)} · {hit.chunk_id}"),
        title_align="left",
    )
