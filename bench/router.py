"""Learned router benchmark: paired outcomes on a labelled set that mixes corpora, a learned
router trained on two thirds of it, and every routing policy measured on the last third.

    .venv/bin/python bench/router.py [--work DIR] [--max-tokens 64] [--concurrency 4]

The set (`mixed_cases`, written to DIR/cases.jsonl): Python FAQ questions over the Python docs
and SQLite FAQ questions over the SQLite docs (the two developers' sets, ingested into one
collection; reference = the FAQ's answer), abstract -> title prompts (reference = the paper's
title; the "titler" adapter is trained first on other abstracts), Git command descriptions ->
the one-line summary of the command's manual page (a second adapter task, in a house style:
reference = the page's NAME line; the "gitsummary" adapter is trained first on other
commands' pages, from the Git set's full corpus), general questions (no reference: graded by
grounding, where nothing is expected to be grounded), and follow-ups (a FAQ question, the
start of its answer, then "Why is that?"-style turns; reference = the FAQ's answer).
Labels: rag, adapter (titler), adapter (gitsummary), base, rag.

Steps (each cached in DIR, so a rerun skips what is done): build the dev sets, ingest the
Python and SQLite ones, train the titler adapter (abstracts 0-59) and the gitsummary adapter
(three of every four Git manual pages), start a fresh engine, `router collect` every case
through rag, base, adapter and adapter+rag (greedy, --max-tokens), then `router train` on the
cases whose line is not a multiple of 3 and `eval route --outcomes` on those that are.
Printed: each policy's mean grade and label accuracy on the held-out third, the share of the
thresholds-to-oracle gap the learned router closes, and the decision time of the learned model
(p50 of `RouteModel.choose` over the held-out features; target <= 1 ms with the thresholds'
plan) against the thresholds' plan on the same numbers. Dev numbers: the same sets the router's
thresholds and the retrieval were developed on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.common import (
    ABSTRACTS,
    CACHE,
    engine_settings,
    eval_set,
    git_set,
    percentile,
    running,
    sqlite_set,
    use_api_settings,
)
from ragtune.evals.outcomes import collect_case_file, read_outcomes
from ragtune.evals.router_training import compare_policies, learned_choice, train_router
from ragtune.retrieval.embedder import model_id_for
from ragtune.serving.outcomes import CaseOutcome, unreferenced_grade
from ragtune.serving.router import RouteRequest, plan_route
from ragtune.serving.settings import ServingSettings

RAGTUNE = str(Path(sys.executable).parent / "ragtune")
COLLECTION = "docs"
ADAPTER = "titler"
TRAIN_ROWS = range(0, 60)
CASE_ROWS = range(130, 180)
SUMMARIZER = "gitsummary"
SUMMARY_INSTRUCTION = (
    "Write the one-line summary of this Git command for the NAME line of its manual page:"
)
SUMMARY_TASK = "Write the one-line manual page summary of a Git command from its description."
FOLLOW_UPS = (
    "Why is that?",
    "Can you say more about that?",
    "And how would I do that in practice?",
    "What should I watch out for there?",
)
# Requests for the base model (not `evals.routes.GENERAL_QUESTIONS`, which `eval route --suggest`
# uses as its negatives).
GENERAL = (
    "Hi there! How are you doing today?",
    "Can you recommend a good movie for a rainy evening?",
    "What should I cook for dinner tonight with chicken and rice?",
    "Tell me a joke about cats.",
    "I'm feeling a bit stressed about my exams, any advice?",
    "What's a nice name for a golden retriever puppy?",
    "How do I get red wine out of a white carpet?",
    "Suggest a few fun things to do in Lisbon for a weekend.",
    "What's the difference between a latte and a cappuccino?",
    "Write a short birthday message for my grandmother.",
    "How often should I water a cactus?",
    "Can you help me plan a vegetarian picnic for six people?",
    "What are some good stretches after a long run?",
    "How long should I boil an egg for a runny yolk?",
    "What's a good gift for someone who loves gardening?",
    "Recommend a cozy mystery novel for the holidays.",
    "What is the capital of Australia?",
    "How many legs does a spider have?",
    "Give me three tips for a job interview.",
    "What is a good way to learn to juggle?",
    "Why is the sky blue?",
    "How do I fold a paper airplane?",
    "What's the best time of year to visit Japan?",
    "Can you suggest a name for my sourdough starter?",
)


def ragtune(*args: str | Path) -> None:
    subprocess.run([RAGTUNE, *map(str, args)], check=True)


def faq(qa: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(qa.read_text(encoding="utf-8"))
    return items


def git_summaries() -> tuple[list[dict[str, str]], list[tuple[int, dict[str, str]]]]:
    """Every Git manual page of the Git set's full corpus with a NAME and a DESCRIPTION, as a
    task row: the description's first paragraph (at most about 600 characters, cut at a
    sentence) -> the summary on the page's NAME line ("Add file contents to the index").
    Split: three of every four rows train the adapter; the fourth, numbered, are cases."""
    from bs4 import BeautifulSoup

    rows = []
    for page in sorted((git_set("full") / "corpus").glob("git-*.html")):
        soup = BeautifulSoup(page.read_text(encoding="utf-8"), "html.parser")
        headings = {h.get_text(strip=True): h for h in soup.find_all("h2")}
        name, description = headings.get("NAME"), headings.get("DESCRIPTION")
        if name is None or description is None:
            continue
        name_body, description_body = name.find_next_sibling(), description.find_next_sibling()
        if name_body is None or description_body is None:
            continue
        summary = " ".join(name_body.get_text(" ", strip=True).split())
        summary = summary.split(" - ", 1)[1].strip() if " - " in summary else ""
        text = " ".join(description_body.get_text(" ", strip=True).split())
        if not summary or len(text) < 40:
            continue
        if len(text) > 600:
            cut = [m.end() for m in re.finditer(r"[.:;] ", text[:600])]
            text = text[: cut[-1]].strip() if cut else text[:600]
        rows.append({"instruction": SUMMARY_INSTRUCTION, "input": text, "output": summary})
    train = [row for n, row in enumerate(rows) if n % 4 != 0]
    return train, [(n, row) for n, row in enumerate(rows) if n % 4 == 0]


def mixed_cases(
    python_qa: Path, sqlite_qa: Path, summaries: list[tuple[int, dict[str, str]]]
) -> list[dict[str, Any]]:
    python, sqlite = faq(python_qa), faq(sqlite_qa)
    rows = [json.loads(line) for line in ABSTRACTS.read_text().splitlines() if line]
    cases: list[dict[str, Any]] = []

    def asked(item: dict[str, Any], corpus: str) -> dict[str, Any]:
        return {
            "question": item["question"],
            "reference": item["answer_passage"],
            "expected_route": "rag",
            "source": f"{corpus}:{item['id']}",
        }

    cases += [asked(item, "python") for item in python[:: max(1, len(python) // 40)][:40]]
    cases += [asked(item, "sqlite") for item in sqlite[:20]]
    cases += [
        {
            "question": f"{rows[n]['instruction']} {rows[n]['input']}",
            "reference": rows[n]["output"],
            "expected_route": "adapter",
            "expected_adapter": ADAPTER,
            "source": f"abstract2title:{n}",
        }
        for n in CASE_ROWS
    ]
    cases += [
        {
            "question": f"{row['instruction']} {row['input']}",
            "reference": row["output"],
            "expected_route": "adapter",
            "expected_adapter": SUMMARIZER,
            "source": f"gitsummary:{n}",
        }
        for n, row in summaries
    ]
    cases += [{"question": q, "expected_route": "base", "source": "general"} for q in GENERAL]
    followed = python[1::9][:12] + sqlite[20:27]
    for i, item in enumerate(followed):
        opening = item["answer_passage"].split(". ")[0][:300]
        cases.append(
            {
                "messages": [
                    {"role": "user", "content": item["question"]},
                    {"role": "assistant", "content": opening},
                    {"role": "user", "content": FOLLOW_UPS[i % len(FOLLOW_UPS)]},
                ],
                "reference": item["answer_passage"],
                "expected_route": "rag",
                "source": f"follow-up:{item['id']}",
            }
        )
    return cases


def prepare(work: Path) -> tuple[Path, Path]:
    """The data dir with both corpora ingested and both adapters trained; the case file."""
    data_dir = work / "data"
    python_set, sqlite_set_dir = eval_set("small"), sqlite_set("small")
    summaries_train, summary_cases = git_summaries()
    cases = work / "cases.jsonl"
    cases.write_text(
        "".join(
            json.dumps(c, ensure_ascii=False) + "\n"
            for c in mixed_cases(python_set / "qa.json", sqlite_set_dir / "qa.json", summary_cases)
        )
    )
    ingested = work / "ingested"
    if not ingested.exists():
        for corpus in (python_set / "corpus", sqlite_set_dir / "corpus"):
            ragtune("ingest", corpus, "--collection", COLLECTION)
        ingested.touch()
    if not (data_dir / "adapters" / ADAPTER).exists():
        rows = ABSTRACTS.read_text().splitlines()
        train = work / "titles.jsonl"
        train.write_text("\n".join(rows[n] for n in TRAIN_ROWS) + "\n")
        ragtune(
            "adapters", "train", train, "--name", ADAPTER, "--max-length", "384",
            "--task", "Write a paper's title from its abstract.", "--collection", COLLECTION,
        )  # fmt: skip
    if not (data_dir / "adapters" / SUMMARIZER).exists():
        train = work / "gitsummaries.jsonl"
        train.write_text(
            "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in summaries_train)
        )
        ragtune(
            "adapters", "train", train, "--name", SUMMARIZER, "--max-length", "256",
            "--task", SUMMARY_TASK,
        )  # fmt: skip
    return data_dir, cases


def decision_times(held_out: list[Any], model: Any, settings: ServingSettings) -> dict[str, float]:
    """p50 ms of the learned model's choice and of the thresholds' whole plan (no hits)."""
    learned, planned = [], []
    for _ in range(20):
        for case in held_out:
            started = time.perf_counter()
            model.choose(case.features, {"rag", "base", "adapter", "adapter+rag"})
            learned.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            plan_route(settings.router, RouteRequest("question"), [], [("titler", 0.2)])
            planned.append((time.perf_counter() - started) * 1000)
    return {"learned_p50_ms": percentile(learned, 50), "plan_p50_ms": percentile(planned, 50)}


def regraded(outcomes: list[CaseOutcome]) -> list[CaseOutcome]:
    """The answers without a reference graded by the current rule from what was stored (their
    text, finish reason and grounding), so that a cached collection follows the product's
    grading."""
    for case in outcomes:
        evidence = case.features["evidence_passing"] > 0
        for outcome in case.outcomes:
            if outcome.metric in ("rouge-l", "exact") or outcome.answer is None:
                continue
            outcome.grade, outcome.metric = unreferenced_grade(
                outcome.answer, outcome.finish_reason, outcome.grounding, evidence
            )
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=CACHE / "bench" / "router")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    data_dir = work / "data"
    engine = engine_settings(data_dir, max_model_len=4096, max_loras=2)  # both adapters
    use_api_settings(data_dir, engine, RAGTUNE_COLLECTION=COLLECTION)
    data_dir, cases = prepare(work)
    outcomes_file = work / "outcomes.jsonl"
    if not outcomes_file.exists():
        partial = work / "outcomes.partial.jsonl"
        partial.unlink(missing_ok=True)
        started = time.perf_counter()
        with running(engine):
            collect_case_file(
                ServingSettings(), cases, partial, collection=COLLECTION,
                max_tokens=args.max_tokens, concurrency=args.concurrency,
            )  # fmt: skip
        partial.replace(outcomes_file)
        print(f"collected in {time.perf_counter() - started:.0f} s")
    outcomes = regraded(read_outcomes([outcomes_file]))
    train = [c for c in outcomes if c.line % 3 != 0]
    held_out = [c for c in outcomes if c.line % 3 == 0]
    settings = ServingSettings()
    trained = train_router(train, embedding_model=model_id_for(settings.retrieval.embedding_model))
    print(f"{len(outcomes)} cases: trained on {len(train)}, measured on {len(held_out)}")
    for score in trained.candidates:
        print(f"  candidate {score.name:16} CV mean grade {score.mean_grade:.3f}")
    print(f"  chosen: {trained.chosen}; best routes {trained.targets}")
    report = compare_policies(held_out, trained.model)
    print(f"{'policy':16} {'mean grade':>10} {'label acc':>9}  routes")
    for policy in report.policies:
        accuracy = "-" if policy.label_accuracy is None else f"{policy.label_accuracy:.3f}"
        routes = ", ".join(f"{r} {n}" for r, n in sorted(policy.routes.items()))
        print(f"{policy.policy:16} {policy.mean_grade:10.3f} {accuracy:>9}  {routes}")
    gap = report.gap_closed
    print(f"gap closed: {'n/a' if gap is None else f'{gap:.0%}'} (target >= 50%)")
    by_source: dict[str, list[float]] = {}
    for case in held_out:
        kind = case.source.split(":")[0]
        by_source.setdefault(kind, []).append(
            case.choosable.get(learned_choice(trained.model, case), 0.0)
        )
    for kind, grades in sorted(by_source.items()):
        print(f"  learned on {kind:14} {statistics.fmean(grades):.3f} ({len(grades)} cases)")
    times = decision_times(held_out, trained.model, settings)
    print(
        f"decision: learned model p50 {times['learned_p50_ms']:.3f} ms, thresholds' plan p50 "
        f"{times['plan_p50_ms']:.3f} ms (target <= 1 ms)"
    )


if __name__ == "__main__":
    main()
