"""Build `route_cases.jsonl`, the labelled requests `ragtune eval route` is tested on, from real
material: Python FAQ questions (expected `rag` over the Python docs), abstract -> title prompts
(expected `adapter`, the "titler" adapter) and small talk (expected `base`).

Deterministic and offline. Run from anywhere:

    python tests/data/build_route_cases.py [OUT]

The FAQ questions come from the developers' small eval set (`$RAGTUNE_EVAL_CACHE/small/qa.json`,
default `~/.cache/ragtune/evalsets/small/qa.json`; `../shared/eval/build_python_docs.py` builds
it); the abstracts from `../shared/eval/abstract2title.jsonl`, rows 100-129 (rows 0-19 are the
adapter's example prompts in the tests, so no case repeats one).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
ABSTRACTS = REPO.parent / "shared" / "eval" / "abstract2title.jsonl"
ABSTRACT_ROWS = range(100, 130)
FAQ_QUESTIONS = 30
ADAPTER = "titler"

# Written for this file: requests neither the Python docs nor the titler adapter should take.
SMALL_TALK = (
    "Hi there! How are you doing today?",
    "Can you recommend a good movie for a rainy evening?",
    "What should I cook for dinner tonight with chicken and rice?",
    "Tell me a joke about cats.",
    "I'm feeling a bit stressed about my exams, any advice?",
    "What's a nice name for a golden retriever puppy?",
    "How do I get red wine out of a white carpet?",
    "Suggest a few fun things to do in Lisbon for a weekend.",
    "Thanks, that was really helpful!",
    "What's the difference between a latte and a cappuccino?",
    "Write a short birthday message for my grandmother.",
    "How often should I water a cactus?",
    "Who won the football match last night?",
    "Can you help me plan a vegetarian picnic for six people?",
    "What are some good stretches after a long run?",
    "I can't decide between a red or a blue sofa. Which goes better with grey walls?",
    "Good morning! Any tips for staying motivated on a Monday?",
    "How long should I boil an egg for a runny yolk?",
    "What's a good gift for someone who loves gardening?",
    "Recommend a cozy mystery novel for the holidays.",
)


def eval_cache() -> Path:
    configured = os.environ.get("RAGTUNE_EVAL_CACHE")
    if configured:
        return Path(configured)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ragtune" / "evalsets"


def abstract_prompt(row: dict[str, Any]) -> str:
    """How an abstract -> title row is asked: its instruction, then the abstract."""
    return f"{row['instruction']} {row['input']}"


def faq_cases(qa_path: Path) -> list[dict[str, Any]]:
    questions = json.loads(qa_path.read_text(encoding="utf-8"))
    # Evenly spread over the set, so every FAQ page is represented.
    picked = [questions[round(i * (len(questions) - 1) / (FAQ_QUESTIONS - 1))]
              for i in range(FAQ_QUESTIONS)]  # fmt: skip
    return [{"question": q["question"], "expected_route": "rag", "source": q["id"]} for q in picked]


def abstract_cases(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    return [
        {
            "question": abstract_prompt(rows[n]),
            "expected_route": "adapter",
            "expected_adapter": ADAPTER,
            "source": f"abstract2title:{n}",
        }
        for n in ABSTRACT_ROWS
    ]


def small_talk_cases() -> list[dict[str, Any]]:
    return [{"question": q, "expected_route": "base", "source": "smalltalk"} for q in SMALL_TALK]


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "route_cases.jsonl"
    cases = [
        *faq_cases(eval_cache() / "small" / "qa.json"),
        *abstract_cases(ABSTRACTS),
        *small_talk_cases(),
    ]
    out.write_text(
        "".join(json.dumps(case, ensure_ascii=False) + "\n" for case in cases), encoding="utf-8"
    )
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
