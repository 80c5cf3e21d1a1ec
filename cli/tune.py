"""`ragtune tune ...`: choose a collection's retrieval settings from its own documents."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from ragtune.cli.settings import command_settings
from ragtune.cli.show import in_markup
from ragtune.retrieval.adaptation import (
    Trial,
    TuneOptions,
    remove_orphaned_models,
    settle,
    try_tuned,
)
from ragtune.retrieval.adaptation import revert as revert_tuning
from ragtune.retrieval.calibration import (
    FUSION_KEYS,
    calibrate,
    default_fusion,
    describe_fusion,
    fusion_in_force,
    read_calibration,
    store_calibration,
)
from ragtune.retrieval.embedder import (
    LazyEmbedder,
    collection_embedder,
    load_embedder,
    model_id_for,
    same_model,
)
from ragtune.retrieval.errors import RetrievalError
from ragtune.retrieval.evaluation import load_qa
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.store import open_store

stdout = Console()
stderr = Console(stderr=True)

tune_app = typer.Typer(
    help="Choose a collection's retrieval settings from its own documents.", no_args_is_help=True
)


@tune_app.command("retrieval")
def tune_retrieval(
    ctx: typer.Context,
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection", "-c", help="Collection to calibrate \\[default: RAGTUNE_COLLECTION]"
        ),
    ] = None,
    queries: Annotated[
        int, typer.Option("--queries", min=20, max=5000, help="Pseudo-queries to draw.")
    ] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draw.")] = 0,
    store_it: Annotated[
        bool,
        typer.Option(
            "--store",
            help="Store the choice with the collection: every search of it then uses it.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Change nothing (the default without --store); with --reset: show what would go.",
        ),
    ] = False,
    reset: Annotated[
        bool, typer.Option("--reset", help="Remove the stored calibration (back to defaults).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Calibrate fusion (method, BM25 weight, rrf_k) for one collection, with no labels:
    sentences of its own chunks are the queries, their neighbouring chunks the answers. Shown;
    stored with the collection only with --store, and then used by every search of it
    (settings given explicitly still win). On each of the developers' sets it was measured on,
    the choice ranked real questions worse than the shipped defaults (README): use --store
    where you have measured it on questions of your own (ragtune eval retrieval).

    Example: ragtune tune retrieval --collection handbook --store
    """
    if store_it and dry_run:
        raise typer.BadParameter("--store and --dry-run contradict each other: give one")
    if store_it and reset:
        raise typer.BadParameter(
            "--reset and --store contradict each other: give --reset to go back to the shipped "
            "defaults, --store to store a new calibration"
        )
    settings = command_settings(ctx).retrieval_for(collection)
    writes = (store_it or reset) and not dry_run  # measuring stores nothing unless asked
    with open_store(settings, "write" if writes else "read") as store:
        target = store.collection(settings.collection, model_id_for(settings.embedding_model))
        if reset:
            if writes:
                store_calibration(target, None)
            if as_json:
                stdout.print_json(json.dumps({"collection": target.name, "reset": writes}))
                return
            # What searches fuse with once no calibration is stored (settings given explicitly,
            # or a tuned embedder's defaults, if not the shipped ones).
            after, source = fusion_in_force(target, settings, None)
            fused = describe_fusion(
                after.fusion, after.lexical_weight, after.rrf_k, after.dense_weight
            )
            then = {
                "settings": f"the fusion settings given explicitly ({fused})",
                "tuned defaults": f"the shipped defaults for a tuned embedder ({fused})",
            }.get(source, f"the shipped defaults ({fused})")
            if not writes:
                stdout.print(f"{target.name}: would search with {then} (dry run)")
            else:
                stdout.print(f"collection {target.name!r} searches with {then}")
            return
        # One refused (another embedding model's, or unreadable) is what this replaces.
        before, refused = read_calibration(target)
        if refused is not None:
            stderr.print(
                f"collection {target.name!r} {in_markup(refused)}: ignored, measuring anew"
                + (" (it stays stored without --store)" if not writes else ""),
                soft_wrap=True,
            )
        lexical = LexicalIndexes.for_store(settings.data_dir, store).current(target, save=writes)
        with stderr.status(f"calibrating {target.name!r} on {queries} pseudo-queries..."):
            # The model loads only once the collection has been found fit to calibrate.
            embedder = LazyEmbedder(lambda: collection_embedder(target, settings))
            defaults = default_fusion(target, settings)  # what the calibration replaces
            try:
                result = calibrate(target, lexical, embedder, defaults, queries, seed)
            except RetrievalError as exc:
                if refused is None:
                    raise
                raise RetrievalError(
                    f"{exc} The calibration it holds is refused, so its searches fail until it "
                    f"goes: ragtune tune retrieval --collection {target.name} --reset"
                ) from None
        if writes:
            store_calibration(target, result)
    # A fusion setting given explicitly wins over any calibration: searches keep using it.
    explicit = sorted(FUSION_KEYS & settings.model_fields_set)
    if as_json:
        stdout.print_json(
            json.dumps(
                {
                    "collection": target.name,
                    "stored": writes,
                    "calibration": result.summary(),
                    "ignored_calibration": refused,
                    "overridden_by": explicit,
                }
            )
        )
        return
    in_force = describe_fusion(
        defaults.fusion, defaults.lexical_weight, defaults.rrf_k, defaults.dense_weight
    )
    compared = "the settings in force" if explicit else "the defaults"
    if refused is not None:  # checked by every search, explicit settings or not
        was = "a refused calibration, searches failing"
    elif explicit:  # they win over any calibration stored
        was = f"settings ({in_force})"
    else:
        was = before.describe() if before else f"defaults ({in_force})"
    stdout.print(
        f"{target.name}: {result.describe()} "
        f"(MRR@10 on {result.pseudo_queries} pseudo-queries {result.mrr:.3f}; {compared} "
        f"{result.default_mrr:.3f}; before: {was}; {result.seconds:.1f} s)"
        + ("" if writes else " (nothing stored)")
    )
    if not writes:
        trial = (
            f"RAGTUNE_FUSION={result.fusion} RAGTUNE_DENSE_WEIGHT={result.dense_weight} "
            f"RAGTUNE_LEXICAL_WEIGHT={result.lexical_weight} RAGTUNE_RRF_K={result.rrf_k} "
            f"ragtune eval retrieval -c {target.name} --qa ..."
        )
        first = (
            # Its searches refuse the calibration stored: the comparison needs it gone.
            f"ragtune tune retrieval --collection {target.name} --reset first (searches of it "
            "fail while the refused calibration is stored), then "
            if refused is not None
            else ""
        )
        stdout.print(
            "Not stored: on each of the developers' sets it was measured on, a label-free "
            "choice ranked real questions worse than the shipped defaults (its pseudo-queries "
            "favour BM25). Compare it with what searches use now on questions of your own first "
            f"({escape(first + trial)}, and the same command without the settings); --store "
            "uses it for every search of the collection.",
            soft_wrap=True,
        )
    if explicit:
        fuse = (
            f"fuse with {in_force}"
            if refused is None or writes
            else f"would fuse with {in_force} once the refused calibration is gone (--reset)"
        )
        stdout.print(
            f"searches {'do' if writes else 'would'} not use it: the fusion settings given "
            f"explicitly ({', '.join(explicit)}"
            f"; environment or config file) win over a calibration, so searches {fuse}; "
            "remove them to use the calibration"
        )


@tune_app.command("embedder")
def tune_embedder(
    ctx: typer.Context,
    collection: Annotated[
        str | None,
        typer.Option(
            "--collection", "-c", help="Collection to tune for \\[default: RAGTUNE_COLLECTION]"
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, max=100_000, help="Training steps.")] = 60,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", min=2, max=1024, help="Pairs a step (in-batch negatives)."),
    ] = 32,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=1e-7, max=1e-2)] = 3e-5,
    held_out: Annotated[
        int,
        typer.Option("--held-out", min=20, max=5000, help="Pseudo-queries kept out to measure."),
    ] = 200,
    dev_set: Annotated[
        Path | None,
        typer.Option(
            "--dev-set",
            help="Labelled questions (eval retrieval's JSON) to measure before/after; the "
            "decision then rests on them.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draws and the training.")] = 0,
    force: Annotated[
        bool, typer.Option("--force", help="Adopt the tuned model even if it measures worse.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Train and measure; change nothing.")
    ] = False,
    revert: Annotated[
        bool, typer.Option("--revert", help="Re-embed with the configured model again.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Fine-tune the embedding model on the collection's own chunks (no labels: a sentence of
    a chunk is the query, the chunk its passage), re-embed the collection with it as a new
    model identity, measure before and after on pseudo-queries kept out of training (and on
    --dev-set when given), and adopt it only if it does not measure worse. Searches of the
    collection then use the tuned model; --revert goes back.

    Example: ragtune tune embedder --collection handbook --dev-set questions.json
    """
    everything = command_settings(ctx)
    settings = everything.retrieval_for(collection)
    qa = load_qa(dev_set) if dev_set is not None else None
    configured = load_embedder(settings)
    options = TuneOptions(steps, batch_size, learning_rate, held_out, seed)
    with open_store(settings, "write") as store:
        target = store.collection(settings.collection, configured.model_id)
        orphans = [] if dry_run else remove_orphaned_models(store, target, settings)
        if orphans:
            stderr.print(
                f"removed {len(orphans)} model folder(s) tuned for {target.name!r} by runs that "
                f"were killed before they could remove them: {', '.join(orphans)}",
                soft_wrap=True,
            )
        indexes = LexicalIndexes.for_store(settings.data_dir, store)
        tuned_before = not same_model(target.embedding_model, configured.model_id)
        if revert:
            if tuned_before and not dry_run:
                with stderr.status(f"re-embedding {target.name!r}...") as status:
                    revert_tuning(store, target, configured, indexes, settings, status.update)
            if as_json:
                reverted = tuned_before and not dry_run
                stdout.print_json(json.dumps({"collection": target.name, "reverted": reverted}))
            elif not tuned_before:
                stdout.print(f"{target.name}: already embedded with {configured.model_id}")
            else:
                stdout.print(
                    f"{target.name}: embedded with {configured.model_id} again"
                    + (" (dry run: nothing changed)" if dry_run else "")
                )
            return
        with stderr.status(f"tuning for {target.name!r}...") as status:
            trial = try_tuned(
                store, target, configured, settings, indexes, options, qa, status.update,
                everything.serving.router.turn_weighting(),
            )  # fmt: skip
        adopted = not dry_run and (trial.better or force)
        settle(store, target, trial, adopted, indexes, settings)
    _report(target.name, trial, adopted, dry_run, as_json, settings.tuned_lexical_weight)


def _report(
    name: str, trial: Trial, adopted: bool, dry_run: bool, as_json: bool, bm25_weight: float
) -> None:
    old, new = trial.scores
    before, after, dev, training = trial.before, trial.after, trial.dev, trial.training
    if as_json:
        result = {
            "collection": name,
            "model": trial.model_id,
            "adopted": adopted,
            "decided_on": trial.decided_on,
            "before": old,
            "after": new,
            "pseudo_queries": {
                "held_out": before.queries,
                "before": {"mrr@10": before.mrr, "recall@5": before.recall5},
                "after": {"mrr@10": after.mrr, "recall@5": after.recall5},
            },
            "dev_set": {"before": dev[0], "after": dev[1]} if dev else None,
            "training": training.to_dict(),
            "carried_over": trial.carried_over,
        }
        stdout.print_json(json.dumps(result))
        return
    stdout.print(
        f"{name}: trained {trial.model_id} on {training.pairs} pairs in "
        f"{training.seconds:.0f} s (loss {training.first_loss:.3f} -> {training.last_loss:.3f})"
    )
    stdout.print(
        f"held-out pseudo-queries ({before.queries}), dense: MRR@10 {before.mrr:.3f} -> "
        f"{after.mrr:.3f}, recall@5 {before.recall5:.3f} -> {after.recall5:.3f}"
    )
    was, now = dev or ({}, {})
    for mode in was:
        stdout.print(
            f"dev set {mode}: MRR@10 {was[mode]['mrr@10']:.3f} -> {now[mode]['mrr@10']:.3f}, "
            f"recall@5 {was[mode]['recall@5']:.3f} -> {now[mode]['recall@5']:.3f}"
        )
    if adopted:
        stdout.print(f"adopted: {name!r} is now embedded with {trial.model_id}")
        if trial.carried_over:
            stdout.print(
                f"{trial.carried_over} chunks written to it meanwhile (by another process) "
                "were carried over"
            )
        stdout.print(
            f"its searches weigh BM25 {bm25_weight} beside the tuned model "
            "(tuned_lexical_weight; a fusion setting you give wins); a fusion calibration, if "
            "any, was measured with the old vectors and was dropped"
        )
    elif dry_run:
        stdout.print("(dry run: nothing changed)")
    else:
        stdout.print(
            f"not adopted: the tuned model measures worse on the {trial.decided_on} ({new:.3f} "
            f"< {old:.3f}); the collection is unchanged (--force adopts it anyway)"
        )
