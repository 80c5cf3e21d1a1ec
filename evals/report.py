"""`ragtune advise --report DIR`: the advice as files anyone can read without ragtune:
`advice.json` (everything measured), `advice.md` (the verdict, its reasons and the tables),
`variants.png` (every prompting variant on the dev split, the chosen one and the adapter on the
test split) and, with a learning curve, `learning_curve.png`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], folder: Path) -> list[Path]:
    """Write the report's files into `folder` (made if missing); the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "advice.json", folder / "advice.md"]
    written[0].write_text(json.dumps(report, indent=2) + "\n")
    pictures = [_variants_chart(report, folder / "variants.png")]
    if report["curve"]:
        pictures.append(_curve_chart(report, folder / "learning_curve.png"))
    written[1].write_text(markdown(report, [p.name for p in pictures]))
    return written + pictures


def markdown(report: dict[str, Any], pictures: list[str]) -> str:
    metric = report["metric"]
    lines = [
        f"# Advice for {report['task']}",
        "",
        f"**Verdict: {report['verdict_words']}.**",
        "",
        *[f"- {reason}" for reason in report["reasons"]],
        "",
        f"Splits: {report['splits']['pool']} examples for few-shot and training, "
        f"{report['splits']['dev']} dev (choosing), {report['splits']['test']} test (reporting). "
        f"Format read from the references: {report['format']['instructions']}",
        "",
    ]
    lines += [f"Note: {note}" for note in report["notes"]]
    scorers = list(report["variants"][0]["scores"]) if report["variants"] else [metric]
    lines += ["", "## Prompting variants (dev split)", ""]
    lines += _systems(report["variants"], scorers, "variant", chosen=report["best"])
    lines += ["", "## Test split", ""]
    lines += _systems(report["test"], scorers, "system")
    for name, by_metric in report["intervals"].items():
        for scorer, interval in by_metric.items():
            lines.append(
                f"\n{name}, {scorer}: {interval['mean']:+.3f} "
                f"({interval['level']:.0%} interval {interval['low']:+.3f} to "
                f"{interval['high']:+.3f})"
            )
    failures = report["failures"]
    lines += [
        "",
        f"## Failure modes of {report['best']} (test split)",
        "",
        f"{failures['share']:.0%} of {failures['answers']} answers break the format"
        + (" (systematic)." if failures["systematic"] else "."),
        "",
    ]
    for mode, count in failures["counts"].items():
        lines.append(f"- {mode}: {count}")
        for shown in failures["examples"].get(mode, [])[:1]:
            lines.append(f"  - answer: {shown['answer']!r}; reference: {shown['reference']!r}")
    if report["curve"]:
        lines += ["", "## Learning curve (test split)", ""]
        lines += _table(
            ["training examples", metric, "training (s)", "peak memory (MB)"],
            [
                [
                    str(p["size"]),
                    f"{p['scores'][metric]:.3f}",
                    f"{p['training_seconds']:.0f}",
                    f"{p['peak_memory_mb']:.0f}",
                ]
                for p in report["curve"]
            ],
        )
        smallest = report["smallest_size"]
        lines.append(
            f"\nSmallest training set that reaches the best prompting score + margin: "
            f"{smallest if smallest is not None else 'not reached'}."
        )
    cost = report["cost"]
    if "side_by_side" in cost:
        lines += ["", "## Cost", ""]
        lines += _table(
            ["system", "concurrency", "p50 latency (s)", "requests/s", "answer tokens/s"],
            [
                [
                    r["system"],
                    str(r["concurrency"]),
                    f"{r['p50_latency_s']:.2f}",
                    f"{r['requests_per_s']:.2f}",
                    f"{r['answer_tokens_per_s']:.1f}",
                ]
                for r in cost["side_by_side"]
            ],
        )
        even = cost["break_even"]
        prices = cost["prices"]
        lines.append(
            f"\nTokens per request: prompting {cost['prompting']['total_tokens']:.0f}, adapter "
            f"{cost['adapter']['total_tokens']:.0f} (saved {even['saved_tokens']:.0f}). "
            f"Training cost {even['training_cost']:.4f} at {prices['per_training_hour']} per "
            f"hour; break-even after "
            + (f"{even['requests']} requests" if even["requests"] is not None else "never")
            + f" at {prices['per_1k_tokens']} per 1k tokens (assumed prices: set your own)."
        )
    if report.get("parity"):
        parity = report["parity"]
        lines.append(
            f"\nParity with PEFT: agreement {parity['agreement']:.0%} on {parity['prompts']} "
            f"prompts ({'ok' if parity['ok'] else 'refused'})."
        )
    lines += ["", *[f"![{p}]({p})" for p in pictures], ""]
    timing = report["timing"]
    lines.append(
        f"Run: {timing['wall_s']:.0f} s wall, {timing['request_seconds_sum']:.0f} s of requests "
        f"(at most {timing['concurrency']} at once)."
    )
    return "\n".join(lines) + "\n"


def _systems(
    systems: list[dict[str, Any]], scorers: list[str], first: str, chosen: str | None = None
) -> list[str]:
    """The table of systems (variants or the test split's): scores, tokens and latency."""
    return _table(
        [first, *scorers, "prompt tokens", "answer tokens", "latency (s)"],
        [
            [
                r["name"] + (" (chosen)" if r["name"] == chosen else ""),
                *[f"{r['scores'][s]:.3f}" for s in scorers],
                f"{r['prompt_tokens']:.0f}",
                f"{r['completion_tokens']:.0f}",
                f"{r['latency_s']:.2f}",
            ]
            for r in systems
        ],
    )


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _variants_chart(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    metric = report["metric"]
    names = [f"{v['name']}\n(dev)" for v in report["variants"]]
    values = [v["scores"][metric] for v in report["variants"]]
    colors = ["tab:blue"] * len(values)
    for result in report["test"]:
        names.append(f"{result['name']}\n(test)")
        values.append(result["scores"][metric])
        colors.append("tab:orange")
    figure, axis = plt.subplots(figsize=(max(6.0, 0.9 * len(names)), 4))
    axis.bar(range(len(values)), values, color=colors)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    axis.set_ylabel(metric)
    axis.set_title(f"{report['task']}: prompting variants (dev) and the chosen systems (test)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _curve_chart(report: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    metric = report["metric"]
    sizes = [p["size"] for p in report["curve"]]
    values = [p["scores"][metric] for p in report["curve"]]
    best = next(t for t in report["test"] if t["name"] == report["best"])
    figure, axis = plt.subplots(figsize=(6, 4))
    axis.plot(sizes, values, marker="o", label="adapter (test split)")
    axis.axhline(best["scores"][metric], color="tab:orange", linestyle="--",
                 label=f"best prompting: {report['best']}")  # fmt: skip
    axis.set_xlabel("training examples")
    axis.set_ylabel(metric)
    axis.set_title(f"{report['task']}: learning curve")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
