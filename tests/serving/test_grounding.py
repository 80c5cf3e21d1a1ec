"""The grounding check with the real embedding model: answers built to be supported by their
passages (sentences copied from them, paraphrases) score above answers that are not (a claim on
the topic the passage does not make, an off-topic one), whose sentences are listed; a sentence's
[n] picks the passage it is checked against. An NLI cross-encoder, when configured, is what
judges (its labels read by name); and the score reaches the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ragtune.retrieval.embedder import Embedder, resolve_model_path
from ragtune.serving.errors import GroundingModelError
from ragtune.serving.grounding import (
    CrossEncoderEntailment,
    GroundingChecker,
    answer_sentences,
    citations,
    load_grounding_checker,
)
from ragtune.serving.observability import Metrics, RequestRecord
from ragtune.serving.settings import GroundingSettings

MINILM = Path(resolve_model_path("all-MiniLM-L6-v2"))
REFUNDS = (
    "Invoices are refunded within thirty days of the refund request. Refunds go back to the "
    "card used for the purchase. A refund of more than 500 euros needs the approval of a "
    "finance manager."
)
LIBRARY = (
    "The library is open from 9 a.m. to 8 p.m. on weekdays and from 10 a.m. to 4 p.m. on "
    "Saturdays. It is closed on Sundays. Members can borrow up to ten books for three weeks."
)
PASSAGES = [REFUNDS, LIBRARY]
COPIED = "Invoices are refunded within thirty days of the refund request [1]."
PARAPHRASED = "Refunds above 500 euros must be approved by someone in finance management [1]."
ABSENT = "Refunds can also be paid out in cash at any of our branch offices [1]."
OFF_TOPIC = "Photosynthesis converts light energy into chemical energy in plants."


@pytest.fixture(scope="module")
def checker(real_embedder: Embedder) -> GroundingChecker:
    return GroundingChecker(real_embedder)


def test_an_answer_from_its_passages_scores_above_one_they_do_not_support(
    checker: GroundingChecker,
) -> None:
    supported = checker.check(f"{COPIED} {PARAPHRASED}", PASSAGES)
    unsupported = checker.check(f"{ABSENT} {OFF_TOPIC}", PASSAGES)
    mixed = checker.check(f"{COPIED}\n\n{ABSENT}", PASSAGES)
    assert supported is not None
    assert unsupported is not None
    assert mixed is not None
    assert (supported.score, supported.sentences, supported.unsupported) == (1.0, 2, ())
    assert (unsupported.score, unsupported.unsupported) == (0.0, (ABSENT, OFF_TOPIC))
    assert (mixed.score, mixed.unsupported) == (0.5, (ABSENT,))
    copied, paraphrased = supported.detail
    absent, off_topic = unsupported.detail
    assert copied.support > paraphrased.support > absent.support > off_topic.support
    assert copied.support == pytest.approx(1.0, abs=1e-3)  # the passage's own sentence
    assert off_topic.support < 0.3
    assert supported.to_info().model_dump() == {
        "score": 1.0, "sentences": 2, "unsupported": [], "method": "similarity",
    }  # fmt: skip


def test_a_cited_passage_is_the_one_a_sentence_is_checked_against(
    checker: GroundingChecker,
) -> None:
    sentence = "Members may borrow as many as ten books for three weeks"
    cited_right = checker.check(f"{sentence} [2].", PASSAGES)
    cited_wrong = checker.check(f"{sentence} [1].", PASSAGES)
    uncited = checker.check(f"{sentence}.", PASSAGES)
    unknown = checker.check(f"{sentence} [7].", PASSAGES)  # no such passage: all are compared
    assert cited_right is not None
    assert cited_wrong is not None
    assert uncited is not None
    assert unknown is not None
    assert [(s.passage, s.cited, s.supported) for s in cited_right.detail] == [(2, (2,), True)]
    assert [(s.passage, s.cited, s.supported) for s in cited_wrong.detail] == [(1, (1,), False)]
    assert [(s.passage, s.cited, s.supported) for s in uncited.detail] == [(2, (), True)]
    assert [(s.passage, s.supported) for s in unknown.detail] == [(2, True)]
    # Passages numbered otherwise than 1..N (a subset of a prompt's) are cited by their number.
    renumbered = checker.check(f"{sentence} [5].", [REFUNDS, LIBRARY], numbers=[4, 5])
    assert renumbered is not None
    assert renumbered.detail[0].passage == 5
    assert renumbered.detail[0].supported


def test_nothing_to_check_is_none(checker: GroundingChecker) -> None:
    assert checker.check(COPIED, []) is None
    assert checker.check("", PASSAGES) is None
    # Too short to be a claim, a question, a bare citation: nothing is checked.
    assert checker.check("Yes. [1]\n\nWould you like to know more about refunds?", PASSAGES) is None


def test_an_answer_is_cut_into_sentences_with_their_citations() -> None:
    text = (
        "Refunds take thirty days. [1] They go to the card [1][2].\n"
        "- Members borrow ten books [2, 3].\n"
        "```python\nprint('code is not a claim.')\n```\n"
        "1. Closed on Sundays [2]"
    )
    assert [(c.plain, c.cited) for c in answer_sentences(text)] == [
        ("Refunds take thirty days.", (1,)),
        ("They go to the card.", (1, 2)),
        ("Members borrow ten books.", (2, 3)),
        ("Closed on Sundays", (2,)),
    ]
    assert answer_sentences(text)[0].text == "Refunds take thirty days [1]."


def test_an_index_in_code_cites_nothing() -> None:
    text = "Use `xs[1]` here [2].\n```\nargs[3]\n```\nThen ``a[4]`` and [5]. An open ```b[6]"
    assert citations(text) == [(text.index("[2]"), (2,)), (text.index("[5]"), (5,))]
    assert [c.cited for c in answer_sentences(text)] == [(2,), (5,), ()]  # "An open"
    # A stray backtick pairs with none past its paragraph; a `~~~` fence is code too.
    stray = "Quote code with a backtick (`) [1].\n\nAlso `x` is shown [2] and `y`."
    assert [numbers for _, numbers in citations(stray)] == [(1,), (2,)]
    tilde = "~~~\nxs[3] and `\n~~~\nSee `z` [4]."
    assert [numbers for _, numbers in citations(tilde)] == [(4,)]


def test_an_index_in_code_outside_backticks_cites_nothing() -> None:
    """A small model writes code in its prose without backticks: `args[2].strip()` cited the
    second passage. An index glued to a name and followed by more code (an attribute, a call,
    an assignment, a comparison) is code; a marker glued to a name alone still cites, as
    answers cite after identifiers, versions and abbreviations, and the sentence's plain text
    keeps the code whole. What the sentences cite is what the text cites."""
    code = "Call args[2].strip(), set x[3] = 5, x[1] += 1, f[4](y) and ptr[1]->next [5]."
    assert citations(code) == [(code.index("[5]"), (5,))]
    (sentence,) = answer_sentences(code)
    assert sentence.cited == (5,)
    assert sentence.plain.startswith("Call args[2].strip(), set x[3] = 5")
    prose = (
        "SQLite supports it[1]. Writes are atomic.[2] Reads too [3][4]. Set "
        "SQLITE_MAX_LENGTH[1] or use Node.js[2], v3.35[3], e.g.[4] (see it[1](https://x.org))."
    )
    cited = [numbers for _, numbers in citations(prose)]
    assert cited == [(1,), (2,), (3,), (4,), (1,), (2,), (3,), (4,), (1,)]
    in_sentences = [n for claim in answer_sentences(prose) for n in claim.cited]
    assert sorted(in_sentences) == sorted(n for numbers in cited for n in numbers)


# The NLI model, when one is configured


@pytest.fixture(scope="module")
def nli_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An NLI CrossEncoder folder made offline from MiniLM's weights, its head set so that
    every pair gets the same logits (its judgement is not what is tested): entailment, listed
    second of three labels as NLI models have them, ahead."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("grounding") / "minilm-nli"
    labels = {0: "contradiction", 1: "entailment", 2: "neutral"}
    model = AutoModelForSequenceClassification.from_pretrained(
        str(MINILM), num_labels=3, id2label=labels, label2id={v: k for k, v in labels.items()}
    )
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 3.0, 0.0]))
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(MINILM)).save_pretrained(folder)
    return folder


def relabelled(folder: Path, target: Path, labels: dict[str, str]) -> Path:
    import shutil

    shutil.copytree(folder, target)
    config = json.loads((target / "config.json").read_text())
    config["id2label"] = labels
    config["label2id"] = {v: int(k) for k, v in labels.items()}
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_an_nli_model_judges_with_its_entailment_probability(
    nli_folder: Path, tmp_path: Path, real_embedder: Embedder
) -> None:
    settings = GroundingSettings(grounding_model=str(nli_folder))
    checker = load_grounding_checker(settings, real_embedder)
    assert checker is not None
    assert checker.method == "nli"
    assert checker.threshold == 0.5
    assert isinstance(checker.entailment, CrossEncoderEntailment)
    assert checker.entailment.label == 1
    entails = 1 / (1 + 2 * 2.718281828**-3.0)  # softmax of (0, 3, 0), the second label
    grounding = checker.check(f"{ABSENT} {OFF_TOPIC}", PASSAGES)
    assert grounding is not None
    assert grounding.method == "nli"
    assert [s.support for s in grounding.detail] == pytest.approx([entails, entails], abs=1e-4)
    assert grounding.score == 1.0  # this head entails everything: the check follows it
    # The same weights with the labels in another order: entailment is now the first one,
    # whose logit is low, and every sentence is unsupported.
    moved = relabelled(
        nli_folder, tmp_path / "moved", {"0": "ENTAILMENT", "1": "CONTRADICTION", "2": "NEUTRAL"}
    )
    reordered = GroundingChecker(
        real_embedder, entailment=CrossEncoderEntailment(str(moved))
    ).check(f"{COPIED} {PARAPHRASED}", PASSAGES)
    assert reordered is not None
    assert [s.support for s in reordered.detail] == pytest.approx([(1 - entails) / 2] * 2, abs=1e-4)
    assert reordered.unsupported == (COPIED, PARAPHRASED)


def test_what_is_not_an_nli_model_is_refused_naming_the_setting(
    nli_folder: Path, tmp_path: Path, real_embedder: Embedder
) -> None:
    with pytest.raises(GroundingModelError, match=r"no such folder\. Set RAGTUNE_GROUNDING_MODEL"):
        CrossEncoderEntailment(str(tmp_path / "missing"))
    with pytest.raises(GroundingModelError, match="nor in the local Hugging Face cache"):
        CrossEncoderEntailment("someone/not-downloaded-nli")
    with pytest.raises(
        GroundingModelError, match=r"not a cross-encoder \(its architecture is Bert"
    ):
        CrossEncoderEntailment(str(MINILM))
    unnamed = relabelled(
        nli_folder, tmp_path / "unnamed", {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    )
    with pytest.raises(GroundingModelError, match="no entailment label"):
        CrossEncoderEntailment(str(unnamed))
    assert load_grounding_checker(GroundingSettings(grounding=False), real_embedder) is None
    assert GroundingSettings(grounding_model=" ").grounding_model is None


def test_the_grounding_of_answers_reaches_the_metrics() -> None:
    metrics = Metrics()
    for score, unsupported in ((1.0, 0), (0.5, 1), (0.0, 2)):
        record = RequestRecord("r", "POST", "/v1/chat/completions", route="rag")
        record.grounding, record.unsupported_sentences = score, unsupported
        metrics.observe(record, 200)
    metrics.observe(RequestRecord("r", "POST", "/v1/chat/completions", route="base"), 200)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for sample in family.samples
    }
    assert samples[("ragtune_grounding_score_count", (("route", "rag"),))] == 3
    assert samples[("ragtune_grounding_score_sum", (("route", "rag"),))] == 1.5
    assert samples[("ragtune_grounding_score_bucket", (("le", "0.5"), ("route", "rag")))] == 2
    assert samples[("ragtune_unsupported_sentences_total", (("route", "rag"),))] == 3
    assert ("ragtune_grounding_score_count", (("route", "base"),)) not in samples
