"""The reranking stage: a real sentence-transformers CrossEncoder by path reorders the best
fused candidates; what is not a cross-encoder, or not on disk, is refused with what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ragtune.ingest.pipeline import IngestService
from ragtune.ingest.settings import IngestSettings
from ragtune.retrieval.embedder import Embedder, resolve_model_path
from ragtune.retrieval.lexical import LexicalIndexes
from ragtune.retrieval.rerank import (
    CrossEncoderReranker,
    RerankerError,
    check_cross_encoder,
    load_reranker,
)
from ragtune.retrieval.search import Retriever, SearchMode
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import VectorStore
from tests.support.cli import ragtune

MINILM = Path(resolve_model_path("all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CrossEncoder folder made offline from MiniLM's weights with a one-score head (its
    scores are not meaningful; the stage's plumbing is what is tested)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path_factory.mktemp("reranker") / "minilm-cross"
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(str(MINILM), num_labels=1)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(str(MINILM)).save_pretrained(folder)
    return folder


def test_the_reranker_orders_the_best_fused_candidates_by_its_scores(
    cross_encoder: Path,
    tmp_path: Path,
    store: VectorStore,
    settings: RetrievalSettings,
    real_embedder: Embedder,
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    topics = ["cats", "dogs", "leave", "valves", "bikes", "tea", "rain", "maps"]
    for n, topic in enumerate(topics):
        body = "\n\n".join(f"Paragraph {i} about {topic}: item {n * 10 + i}." for i in range(4))
        (corpus / f"{topic}.md").write_text(f"# {topic}\n{body}\n")
    collection = store.collection("docs", real_embedder.model_id, create=True)
    indexes = LexicalIndexes.for_store(settings.data_dir, store)
    IngestService(IngestSettings(), collection, lambda: real_embedder, indexes).run([corpus])
    reranker = CrossEncoderReranker(str(cross_encoder))
    depth = 6
    tuned = settings.model_copy(update={"rerank_depth": depth})
    plain = Retriever(collection, real_embedder, indexes, tuned)
    staged = Retriever(collection, real_embedder, indexes, tuned, reranker=reranker)
    question = "What about cats?"
    fused = plain.search(question, depth)
    timings: dict[str, float] = {}
    hits = staged.search(question, 3, timings=timings)
    assert len(hits) == 3
    assert {"fusion", "rerank", "texts"} <= set(timings)  # the stage's time, apart
    expected = reranker.score(question, [h.text for h in fused])
    best = sorted(zip(expected, (h.chunk_id for h in fused), strict=True), reverse=True)[:3]
    assert [h.chunk_id for h in hits] == [chunk_id for _, chunk_id in best]
    assert [h.rerank_score for h in hits] == pytest.approx([s for s, _ in best], abs=1e-5)
    assert [h.rank for h in hits] == [1, 2, 3]
    # Dense and lexical alone are the retrievers' own rankings: no stage.
    assert all(h.rerank_score is None for h in staged.search(question, 3, SearchMode.DENSE))
    # Asked for more hits than it scores, the stage reorders its best fused candidates only:
    # the rest follow in fused order, and no ranking depends on how many hits are asked for
    # (it did: the stage scored as many as were asked for).
    shallow = Retriever(
        collection, real_embedder, indexes, settings.model_copy(update={"rerank_depth": 2}),
        reranker=reranker,
    )  # fmt: skip
    many = shallow.search(question, 5)
    assert [h.chunk_id for h in shallow.search(question, 1)] == [many[0].chunk_id]
    pair = sorted(zip(expected[:2], (h.chunk_id for h in fused[:2]), strict=True), reverse=True)
    assert [h.chunk_id for h in many] == [c for _, c in pair] + [h.chunk_id for h in fused[2:5]]
    assert [h.rerank_score is None for h in many] == [False, False, True, True, True]


def test_what_is_not_a_cross_encoder_is_refused(cross_encoder: Path, tmp_path: Path) -> None:
    with pytest.raises(RerankerError, match="no such folder"):
        CrossEncoderReranker(str(tmp_path / "missing"))
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(RerankerError, match=r"a file, not a model folder\. Set RAGTUNE_RERANKER"):
        CrossEncoderReranker(str(tmp_path / "weights.bin"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(RerankerError, match=r"not a model folder\. Set RAGTUNE_RERANKER to"):
        CrossEncoderReranker(str(tmp_path / "empty"))
    with pytest.raises(RerankerError, match="nor in the local Hugging Face cache"):
        CrossEncoderReranker("someone/not-downloaded-reranker")
    with pytest.raises(RerankerError, match=r"not a cross-encoder \(its architecture is BertModel"):
        CrossEncoderReranker(str(MINILM))  # the embedding model: a bi-encoder
    several = tmp_path / "classifier"
    shutil.copytree(cross_encoder, several)
    config = json.loads((several / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "neutral", "2": "pos"}
    config.pop("num_labels", None)
    (several / "config.json").write_text(json.dumps(config))
    with pytest.raises(RerankerError, match="several labels"):
        CrossEncoderReranker(str(several))
    assert load_reranker(RetrievalSettings()) is None
    assert RetrievalSettings(reranker="  ").reranker is None


def test_a_two_score_head_whose_config_states_no_labels_is_refused_before_loading(
    tmp_path: Path,
) -> None:
    """transformers reads a config with no labels as two: accepted, such a head failed on
    every query (a TypeError in search, a 500 from the server)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = tmp_path / "two-scores"
    AutoModelForSequenceClassification.from_pretrained(str(MINILM), num_labels=2).save_pretrained(
        folder
    )
    AutoTokenizer.from_pretrained(str(MINILM)).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    for key in ("id2label", "label2id", "num_labels"):
        config.pop(key, None)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RerankerError, match="states no number of labels"):
        CrossEncoderReranker(str(folder))
    with pytest.raises(RerankerError, match="states no number of labels"):
        check_cross_encoder(folder, str(folder))  # from its config, before any weight is read


def test_a_bad_reranker_setting_is_one_clear_error(tmp_path: Path) -> None:
    nope = str(tmp_path / "nope")
    result = ragtune("search", "cats", data_dir=tmp_path, RAGTUNE_RERANKER=nope)
    assert result.returncode == 2
    assert "RAGTUNE_RERANKER" in result.stderr
    assert "Traceback" not in result.stderr
    # Before a server starts anything (it started the engine, then failed in a logged traceback).
    serve = ragtune(
        "serve", "--no-start-engine", data_dir=tmp_path, timeout=60, RAGTUNE_RERANKER=nope,
        RAGTUNE_API_KEYS="k", RAGTUNE_ADMIN_API_KEYS="a",
    )  # fmt: skip
    assert serve.returncode == 2
    assert "RAGTUNE_RERANKER" in serve.stderr
    assert "Traceback" not in serve.stderr
    # A search that does not rerank does not load it.
    lexical = ragtune(
        "search", "cats", "--mode", "lexical", data_dir=tmp_path, RAGTUNE_RERANKER=nope
    )
    assert "RAGTUNE_RERANKER" not in lexical.stderr
    assert "does not exist" in lexical.stderr  # the collection: nothing was ingested here


def model_only(cross_encoder: Path, folder: Path) -> Path:
    """A copy of the cross-encoder's config and weights, without any tokenizer file."""
    folder.mkdir()
    for file in ("config.json", "model.safetensors"):
        shutil.copy(cross_encoder / file, folder / file)
    return folder


def test_a_reranker_without_its_own_tokenizer_is_refused_at_load(
    cross_encoder: Path, tmp_path: Path
) -> None:
    # Without tokenizer files transformers makes a five-token one: every word is [UNK] and the
    # scores are flat, so the ordering would be noise.
    bare = model_only(cross_encoder, tmp_path / "no-tokenizer")
    with pytest.raises(RerankerError, match="no tokenizer of its own") as refused:
        CrossEncoderReranker(str(bare))
    assert "Point RAGTUNE_RERANKER at a cross-encoder folder holding its own tokenizer" in str(
        refused.value
    )
    # A server refuses it before it serves, with one line: it failed in the app's startup (a
    # logged traceback, exit 3) after starting the engine.
    serve = ragtune(
        "serve", "--no-start-engine", data_dir=tmp_path / "data", timeout=120,
        RAGTUNE_RERANKER=str(bare), RAGTUNE_API_KEYS="k", RAGTUNE_ADMIN_API_KEYS="a",
    )  # fmt: skip
    assert serve.returncode == 2, serve.stderr
    assert "no tokenizer of its own" in serve.stderr
    assert "Traceback" not in serve.stderr
    assert "ragtune API on" not in serve.stderr


def test_a_reranker_with_another_models_tokenizer_is_refused_at_load(
    cross_encoder: Path, tmp_path: Path
) -> None:
    # A tokenizer larger than the model's embedding table (another family's, e.g. a 49k BPE on a
    # 30k BERT): its ids past the table would fail every query that holds one.
    from transformers import AutoTokenizer

    foreign = model_only(cross_encoder, tmp_path / "other-tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(str(cross_encoder))
    tokenizer.add_tokens([f"<other_{i}>" for i in range(1000)])
    tokenizer.save_pretrained(foreign)
    with pytest.raises(RerankerError, match=r"tokenizer has 31522 tokens but the model only 30522"):
        CrossEncoderReranker(str(foreign))
    # A smaller family's (5,000 word pieces over BERT's 30,522): every id is in the table, the
    # probe pair scores, and each id is read as another word than the tokenizer meant.
    from transformers import BertTokenizerFast

    small = model_only(cross_encoder, tmp_path / "smaller-tokenizer")
    words = (MINILM / "vocab.txt").read_text().splitlines()[:5000]
    BertTokenizerFast(vocab={word: i for i, word in enumerate(words)}).save_pretrained(small)
    with pytest.raises(RerankerError, match=r"has 5000 tokens but the model 30522, more than tw"):
        CrossEncoderReranker(str(small))


def test_a_reranker_that_cannot_score_the_probe_pair_is_refused_at_load(
    cross_encoder: Path, tmp_path: Path
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    broken = tmp_path / "nan-head"
    model = AutoModelForSequenceClassification.from_pretrained(str(cross_encoder))
    with torch.no_grad():
        model.classifier.weight.fill_(float("nan"))
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(str(cross_encoder)).save_pretrained(broken)
    with pytest.raises(RerankerError, match="not as finite numbers"):
        CrossEncoderReranker(str(broken))


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_a_classifier_config_over_weights_without_its_head_is_refused_at_load(
    tmp_path: Path, weights: str
) -> None:
    """The embedding model's folder with its config edited to a one-label classifier: accepted,
    transformers gave the head random weights (a warning on stderr only) and the scores were
    noise, different on every start."""
    folder = tmp_path / "minilm-as-classifier"
    shutil.copytree(
        MINILM, folder, ignore=shutil.ignore_patterns("1_Pooling", "modules.json", "sentence_*")
    )
    config = json.loads((folder / "config.json").read_text())
    config.update(architectures=["BertForSequenceClassification"], id2label={"0": "LABEL_0"})
    (folder / "config.json").write_text(json.dumps(config))
    if weights == "pytorch_model.bin":
        import torch
        from safetensors.torch import load_file

        torch.save(load_file(folder / "model.safetensors"), folder / weights)
        (folder / "model.safetensors").unlink()
    check_cross_encoder(folder, str(folder))  # its config is a cross-encoder's
    with pytest.raises(RerankerError, match="no weights for its classification head") as refused:
        CrossEncoderReranker(str(folder))
    assert "(classifier.weight, classifier.bias)" in str(refused.value)
    assert "use a CrossEncoder (e.g. one trained on MS MARCO) or none" in str(refused.value)


@pytest.mark.parametrize(
    ("config", "refusal"),
    [
        ({"num_labels": None}, "gives num_labels as None, not a number"),
        ({"num_labels": "1"}, "gives num_labels as '1', not a number"),
        ({"architectures": 7}, r"not a cross-encoder \(its architecture is not stated"),
        ([{"architectures": ["BertForSequenceClassification"]}], "not a JSON object"),
        # A list failed at load ("'list' object has no attribute 'items'"), a traceback.
        ({"id2label": ["LABEL_0"]}, "id2label is not an object of label ids to names"),
    ],
)
def test_a_malformed_reranker_config_is_a_clear_error(
    cross_encoder: Path, tmp_path: Path, config: dict[str, object] | list[object], refusal: str
) -> None:
    folder = tmp_path / "malformed"
    folder.mkdir()
    if isinstance(config, dict):
        config = {**json.loads((cross_encoder / "config.json").read_text()), **config}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RerankerError, match=refusal):
        CrossEncoderReranker(str(folder))
