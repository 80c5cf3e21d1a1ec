"""Grounding check benchmark: how well `serving.grounding` tells the sentences a passage supports
from those it does not, on built cases; the numbers behind its blend and threshold.

    .venv/bin/python bench/grounding.py

Each case is a short passage with sentences written for it: copied from it, paraphrased from
it (supported); plausible claims on the same topic that it does not make, and an off-topic one
(unsupported); and one that changes a detail of it (reported apart: a contradiction, which
similarity cannot see). DESIGN was used to choose the blend and the threshold; HELD_OUT was
written afterwards. Each sentence is checked citing its passage ([n]) and citing none (compared
with every passage of its set). Rows: the blend the server uses, the cosine alone and the word
overlap alone (the blend's parts), each with its AUC (supported ranked above unsupported) and
its accuracy at the server's threshold (the parts: at their best threshold on DESIGN, applied
to HELD_OUT). Then the check's time for an answer of 6 sentences over 4 passages, with the
passages' sentences embedded (cold) or cached (warm).
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ragtune.retrieval.embedder import load_embedder
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.serving.grounding import GroundingChecker, SentenceSupport

SUPPORTED = ("copied", "paraphrased")
UNSUPPORTED = ("absent", "off_topic")


@dataclass(frozen=True)
class Case:
    passage: str
    copied: list[str] = field(default_factory=list)
    paraphrased: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    off_topic: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)


DESIGN = [
    Case(
        passage=(
            "Invoices are refunded within thirty days of the refund request. Refunds go back to "
            "the card used for the purchase. A refund of more than 500 euros needs the approval "
            "of a finance manager."
        ),
        copied=["Invoices are refunded within thirty days of the refund request."],
        paraphrased=[
            "You get your money back on the original card within a month of asking.",
            "Refunds above 500 euros must be approved by someone in finance management.",
        ],
        absent=[
            "Refunds can also be paid out in cash at any of our branch offices.",
            "A customer may request a refund at most twice per calendar year.",
        ],
        off_topic=["The cafeteria serves vegetarian lunches on Wednesdays."],
        altered=["Invoices are refunded within ninety days of the refund request."],
    ),
    Case(
        passage=(
            "To read a file line by line, open it with open() in a with statement and iterate "
            "over the file object. Each line keeps its trailing newline character. The file is "
            "closed automatically when the with block ends."
        ),
        copied=["Each line keeps its trailing newline character."],
        paraphrased=[
            "Loop over the file object returned by open(), inside a with block, to get one "
            "line at a time.",
            "Leaving the with block closes the file for you.",
        ],
        absent=[
            "The readlines() method is faster than iterating for files larger than a gigabyte.",
            "Files opened in binary mode return lines decoded as UTF-8 strings.",
        ],
        off_topic=["Paris has been the capital of France since the tenth century."],
        altered=["Each line loses its trailing newline character."],
    ),
    Case(
        passage=(
            "Employees receive 25 days of paid vacation per year. Unused vacation days can be "
            "carried over until the end of March of the following year. Vacation requests must be"
            " submitted at least two weeks in advance through the HR portal."
        ),
        copied=["Employees receive 25 days of paid vacation per year."],
        paraphrased=[
            "Vacation days you do not use can still be taken until the end of the next March.",
            "Submit holiday requests in the HR portal no later than two weeks beforehand.",
        ],
        absent=[
            "Employees with more than ten years of service get five extra vacation days.",
            "Vacation days that are not used are paid out at the end of the year.",
        ],
        off_topic=["Photosynthesis converts light energy into chemical energy in plants."],
        altered=["Employees receive 30 days of paid vacation per year."],
    ),
    Case(
        passage=(
            "The X200 router supports Wi-Fi 6 and has four gigabit Ethernet ports. Its firmware "
            "updates itself every night at 3 a.m. when automatic updates are enabled. A factory "
            "reset is done by holding the reset button for ten seconds."
        ),
        copied=["A factory reset is done by holding the reset button for ten seconds."],
        paraphrased=[
            "The X200 has four gigabit wired ports and Wi-Fi 6.",
            "With automatic updates on, the router installs new firmware each night at 3 a.m.",
        ],
        absent=[
            "The X200 router can be mounted on a wall with the included bracket.",
            "The router's guest network is limited to ten connected devices.",
        ],
        off_topic=["Marathon runners usually eat pasta the night before a race."],
        altered=["A factory reset is done by holding the power button for two seconds."],
    ),
    Case(
        passage=(
            "SQLite stores the whole database in a single file on disk. It supports transactions "
            "that are atomic, consistent, isolated and durable, even after a power failure. Only "
            "one writer can change the database at a time."
        ),
        copied=["SQLite stores the whole database in a single file on disk."],
        paraphrased=[
            "Transactions in SQLite are ACID and survive a power loss.",
            "SQLite allows a single writer at any given moment.",
        ],
        absent=[
            "SQLite databases cannot be larger than four gigabytes.",
            "SQLite replicates the database file to a second server for backups.",
        ],
        off_topic=["The violin has four strings tuned in perfect fifths."],
        altered=["SQLite stores each table in a separate file on disk."],
    ),
    Case(
        passage=(
            "The library is open from 9 a.m. to 8 p.m. on weekdays and from 10 a.m. to 4 p.m. on "
            "Saturdays. It is closed on Sundays. Members can borrow up to ten books for three "
            "weeks."
        ),
        copied=["It is closed on Sundays."],
        paraphrased=[
            "On Saturdays the library opens at ten in the morning and closes at four.",
            "A member may take out as many as ten books for a period of three weeks.",
        ],
        absent=[
            "Late returns cost 50 cents per book per day.",
            "Members can reserve a study room online up to a week in advance.",
        ],
        off_topic=["Mount Everest is the highest mountain above sea level."],
        altered=["It is closed on Mondays."],
    ),
    Case(
        passage=(
            "An adapter is loaded by the engine the first time a request names it. When all LoRA "
            "slots are full, the least recently used adapter is evicted. Swapping an adapter "
            "loads the new version under a new name before the old one is unloaded."
        ),
        copied=["When all LoRA slots are full, the least recently used adapter is evicted."],
        paraphrased=[
            "The engine loads an adapter on the first request that asks for it.",
            "A swap brings up the new version under another name first, and only then "
            "unloads the old one.",
        ],
        absent=[
            "Adapters are trained on the GPU with a learning rate of 0.0002 by default.",
            "Each adapter keeps a copy of the base model's weights in memory.",
        ],
        off_topic=["Bees communicate the location of flowers with a waggle dance."],
        altered=["When all LoRA slots are full, the most recently used adapter is evicted."],
    ),
    Case(
        passage=(
            "The Treaty of Westphalia was signed in 1648 and ended the Thirty Years' War. It "
            "recognised the sovereignty of the German princes. The negotiations took place in the"
            " cities of Osnabrueck and Muenster."
        ),
        copied=["The Treaty of Westphalia was signed in 1648 and ended the Thirty Years' War."],
        paraphrased=[
            "The talks were held in Osnabrueck and Muenster.",
            "Under the treaty, the German princes were recognised as sovereign.",
        ],
        absent=[
            "The treaty was negotiated by more than a hundred delegations over five years.",
            "France gained the region of Alsace under the Treaty of Westphalia.",
        ],
        off_topic=["Python lists can hold values of different types."],
        altered=["The Treaty of Westphalia was signed in 1748 and ended the Seven Years' War."],
    ),
]
HELD_OUT = [  # written after the choice was made on DESIGN, to check it
    Case(
        passage=(
            "The museum's special exhibition on Roman glass runs until 14 September. Tickets cost"
            " 18 euros, and children under twelve enter free. Photography without flash is "
            "allowed in all rooms except the treasury."
        ),
        copied=["Tickets cost 18 euros, and children under twelve enter free."],
        paraphrased=[
            "You can see the Roman glass exhibition until the fourteenth of September.",
            "Visitors may take pictures without a flash anywhere but in the treasury.",
        ],
        absent=[
            "Guided tours of the exhibition start every hour from the main entrance.",
            "The museum offers a reduced price for students with a valid card.",
        ],
        off_topic=["A healthy adult needs about seven hours of sleep per night."],
        altered=["Tickets cost 25 euros, and children under six enter free."],
    ),
    Case(
        passage=(
            "Backups of the production database are taken every six hours and kept for 30 days. "
            "They are encrypted with the team's KMS key and stored in a second region. A restore "
            "is tested automatically once a week."
        ),
        copied=["A restore is tested automatically once a week."],
        paraphrased=[
            "The production database is backed up four times a day, and each backup is "
            "retained for a month.",
            "Backups are encrypted using the KMS key of the team and kept in another region.",
        ],
        absent=[
            "Backups older than a year are moved to cheaper cold storage.",
            "Only two administrators are allowed to start a database restore.",
        ],
        off_topic=["The Amazon river carries more water than any other river."],
        altered=["A restore is tested manually once a month."],
    ),
    Case(
        passage=(
            "Tomatoes should be planted outdoors after the last frost, when the soil is warmer "
            "than 15 degrees. Water them deeply twice a week rather than a little every day. "
            "Removing the side shoots helps the plant put its energy into the fruit."
        ),
        copied=["Water them deeply twice a week rather than a little every day."],
        paraphrased=[
            "Wait until the frost is over and the soil has warmed past 15 degrees before "
            "planting tomatoes outside.",
            "Pinching off side shoots lets the tomato plant focus its energy on fruit.",
        ],
        absent=[
            "Tomatoes grow best next to basil, which keeps pests away.",
            "A tomato plant needs at least eight hours of direct sun each day.",
        ],
        off_topic=["The stock exchange closes early on the day before a holiday."],
        altered=["Water them lightly every day rather than deeply twice a week."],
    ),
    Case(
        passage=(
            "The API accepts at most 60 requests per minute per key. A client over the limit "
            "receives status 429 with a Retry-After header. Keys are created by an administrator "
            "and can be revoked at any time."
        ),
        copied=["A client over the limit receives status 429 with a Retry-After header."],
        paraphrased=[
            "Each key is limited to sixty requests a minute.",
            "An administrator creates the keys and may revoke them whenever needed.",
        ],
        absent=[
            "Requests that exceed the limit are queued and processed later.",
            "Keys expire automatically after ninety days.",
        ],
        off_topic=["Octopuses have three hearts and blue blood."],
        altered=["A client over the limit receives status 503 with a Retry-After header."],
    ),
]


@dataclass(frozen=True)
class Checked:
    kind: str
    sentence: SentenceSupport


def check_all(checker: GroundingChecker, cases: Sequence[Case], cite: bool) -> list[Checked]:
    passages = [case.passage for case in cases]
    checked = []
    for n, case in enumerate(cases, start=1):
        for kind in (*SUPPORTED, *UNSUPPORTED, "altered"):
            for sentence in getattr(case, kind):
                answer = f"{sentence[:-1]} [{n}]." if cite else sentence
                grounding = checker.check(answer, passages)
                assert grounding is not None, sentence
                assert grounding.sentences == 1, sentence
                checked.append(Checked(kind, grounding.detail[0]))
    return checked


Score = Callable[[SentenceSupport], float]
SCORES: dict[str, Score] = {
    "blend (served)": lambda s: s.support,
    "cosine alone": lambda s: s.similarity or 0.0,
    "overlap alone": lambda s: s.overlap or 0.0,
}


def auc(rows: Sequence[Checked], score: Score) -> float:
    positive = [score(r.sentence) for r in rows if r.kind in SUPPORTED]
    negative = [score(r.sentence) for r in rows if r.kind in UNSUPPORTED]
    wins = sum((p > q) + 0.5 * (p == q) for p in positive for q in negative)
    return wins / (len(positive) * len(negative))


def accuracy(rows: Sequence[Checked], score: Score, threshold: float) -> float:
    judged = [r for r in rows if r.kind in SUPPORTED + UNSUPPORTED]
    right = sum((score(r.sentence) >= threshold) == (r.kind in SUPPORTED) for r in judged)
    return right / len(judged)


def best_threshold(rows: Sequence[Checked], score: Score) -> float:
    values = sorted({score(r.sentence) for r in rows})
    middles = [(a + b) / 2 for a, b in itertools.pairwise(values)]
    return max(middles, key=lambda t: accuracy(rows, score, t))


def main() -> None:
    embedder = load_embedder(RetrievalSettings())
    checker = GroundingChecker(embedder)
    print(f"threshold {checker.threshold}; DESIGN {len(DESIGN)} passages, HELD_OUT {len(HELD_OUT)}")
    for cite in (True, False):
        design = check_all(checker, DESIGN, cite)
        held = check_all(checker, HELD_OUT, cite)
        print(f"\n{'citing its passage' if cite else 'citing none (best of all passages)'}")
        print(f"{'':16} {'AUC design':>10} {'held-out':>9} {'threshold':>9} "
              f"{'acc design':>10} {'held-out':>9}")  # fmt: skip
        for name, score in SCORES.items():
            threshold = checker.threshold if name.startswith("blend") else None
            chosen = threshold if threshold is not None else best_threshold(design, score)
            print(
                f"{name:16} {auc(design, score):10.3f} {auc(held, score):9.3f} {chosen:9.3f} "
                f"{accuracy(design, score, chosen):10.3f} {accuracy(held, score, chosen):9.3f}"
            )
        rows = design + held
        means = {
            kind: sum(r.sentence.support for r in rows if r.kind == kind)
            / max(1, sum(r.kind == kind for r in rows))
            for kind in (*SUPPORTED, *UNSUPPORTED, "altered")
        }
        print("mean support: " + ", ".join(f"{k} {v:.2f}" for k, v in means.items()))
    passages = [" ".join(case.passage for case in DESIGN[n : n + 2]) for n in range(0, 8, 2)]
    answer = " ".join(f"{case.paraphrased[0][:-1]} [1]." for case in DESIGN[:6])
    cold = GroundingChecker(embedder)
    cold.check("Warming the model up.", ["A first call loads what it needs."])
    started = time.perf_counter()
    cold.check(answer, passages)
    middle = time.perf_counter()
    cold.check(answer.replace("month", "week"), passages)
    print(
        f"\n6 sentences, 4 passages: {1000 * (middle - started):.0f} ms cold, "
        f"{1000 * (time.perf_counter() - middle):.0f} ms with the passages cached"
    )


if __name__ == "__main__":
    main()
