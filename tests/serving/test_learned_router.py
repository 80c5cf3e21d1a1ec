"""The learned router in the serving path: a stored model is checked at load (format, feature
schema, embedding model), chooses among the routes a request may take, names the features that
decided, and never overrides what the request asked for."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from ragtune.evals.router_training import candidates, features_of, fit, target
from ragtune.serving.components import route_model
from ragtune.serving.errors import RouteModelError
from ragtune.serving.learned_router import RouteModel, load_route_model
from ragtune.serving.router import FEATURES, RouteRequest, plan_route
from ragtune.serving.settings import RouterSettings, ServingSettings
from tests.support.outcomes import outcomes

EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"
SETTINGS = RouterSettings(evidence_threshold=0.37, strong_evidence_threshold=0.55)


@pytest.fixture(scope="module")
def model() -> RouteModel:
    data = outcomes(160, seed=5)
    x = features_of(data)
    return fit(
        candidates(0)[1], x, [target(c) for c in data], np.ones(len(data)), EMBEDDER, {"cases": 160}
    )


@pytest.fixture
def stored(model: RouteModel, tmp_path: Path) -> Path:
    path = tmp_path / "router" / "model.json"
    model.save(path)
    return path


def hit(score: float, text: str) -> object:
    from ragtune.retrieval.search import SearchHit

    return SearchHit(1, "c1", text, "faq.html", "", score, {}, dense_score=score)


def test_the_model_takes_rag_where_the_passage_holds_the_questions_words(model: RouteModel) -> None:
    # Under the evidence threshold: the thresholds answer with the base model.
    request = RouteRequest("how do I vacuum the database file")
    hits = [hit(0.33, "To vacuum the database file, run VACUUM; how do I ...")]
    thresholds = plan_route(SETTINGS, request, hits, [("titler", 0.1)])
    learned = plan_route(SETTINGS, request, hits, [("titler", 0.1)], model=model)
    assert thresholds.route == "base"
    assert learned.route == "rag"
    assert "learned router (logistic regression, trained on 160 cases) chose rag" in learned.reason
    assert "lexical_overlap" in learned.reason
    assert "The thresholds would have taken base" in learned.reason
    assert learned.features["lexical_overlap"] == 1.0


def test_what_the_request_asks_for_is_never_overridden(model: RouteModel) -> None:
    hits = [hit(0.33, "vacuum the database file")]
    forced = RouteRequest("how do I vacuum the database file", route="base")
    assert plan_route(SETTINGS, forced, [], [("titler", 0.1)], model=model).route == "base"
    named = RouteRequest("how do I vacuum the database file", adapter="titler")
    plan = plan_route(SETTINGS, named, hits, [("titler", 0.1)], model=model)
    assert (plan.route, plan.adapter) == ("adapter", "titler")


def test_adapter_routes_only_with_an_adapter_not_advised_against(model: RouteModel) -> None:
    request = RouteRequest("please write a title for this abstract: perovskite cells ...")
    matches = [("titler", 0.7), ("coder", 0.1)]
    plan = plan_route(SETTINGS, request, [hit(0.1, "unrelated")], matches, model=model)
    assert (plan.route, plan.adapter) == ("adapter", "titler")
    against = plan_route(
        SETTINGS, request, [hit(0.1, "unrelated")], matches, {"titler": "prompting"}, model=model
    )
    assert against.adapter is None
    assert against.route in ("rag", "base")
    assert plan_route(SETTINGS, request, [], [], model=model).adapter is None
    explicit = SETTINGS.model_copy(update={"base_route": "explicit"})
    quiet = RouteRequest("hello there, how are you today")
    assert plan_route(explicit, quiet, [hit(0.05, "x")], [], model=model).route == "rag"


def test_a_stored_model_reads_back_identical(model: RouteModel, stored: Path) -> None:
    reread = load_route_model(stored, embedding_model=EMBEDDER)
    x = np.array([0.5] * len(FEATURES))
    np.testing.assert_allclose(reread.logits(x), model.logits(x))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"embedding_model": "other/model"}, "embedding model 'other/model'.*train it again"),
        ({"features": ["evidence_top"]}, "other router features.*router collect"),
        ({"version": 99}, "format version 99"),
        ({"features_revision": 1}, "revision 1 of the router's features.*train it again"),
        ({"features_revision": 3}, "revision 3 of the router's features"),
        ({"format": "something"}, "not a ragtune learned router"),
        ({"classes": ["rag", "nowhere"]}, "damaged learned router"),
        ({"logistic": {"mean": [0.0]}}, "damaged learned router"),
    ],
)
def test_a_router_file_for_something_else_is_refused(
    stored: Path, change: dict, message: str
) -> None:
    data = json.loads(stored.read_text())
    data.update(change)
    stored.write_text(json.dumps(data))
    with pytest.raises(RouteModelError, match=message):
        load_route_model(stored, embedding_model=EMBEDDER)


def test_a_router_file_from_before_the_features_had_a_revision_is_refused(stored: Path) -> None:
    # Trained before 2026-12-08: a follow-up's word overlap then read its own words, so the
    # file's weights mean something else for follow-ups; train again.
    data = json.loads(stored.read_text())
    assert data.pop("features_revision") == 2
    stored.write_text(json.dumps(data))
    with pytest.raises(RouteModelError, match=r"revision 1 .*`ragtune router train`"):
        load_route_model(stored, embedding_model=EMBEDDER)


def test_the_server_falls_back_to_the_thresholds_with_a_warning(
    stored: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = ServingSettings()
    settings.router.router_model = stored
    assert route_model(settings, EMBEDDER) is not None
    with caplog.at_level(logging.WARNING, logger="ragtune.serving"):
        assert route_model(settings, "other/model") is None
    assert "the thresholds route" in caplog.text
    assert "other/model" in caplog.text
    # nothing configured and nothing stored: the thresholds, silently
    settings.router.router_model = None
    settings.retrieval.data_dir = stored.parent / "empty"
    assert route_model(settings, EMBEDDER) is None


def test_a_stale_adapter_chosen_by_the_model_gets_the_fresh_passages(model: RouteModel) -> None:
    from ragtune.retrieval.search import SearchHit

    request = RouteRequest("please write a title for this abstract: perovskite cells ...")
    changed = SearchHit(
        1, "c1", "perovskite", "a.md", "", 0.5, {"doc_id": "d1"}, dense_score=0.5, document="a.md"
    )
    matches = [("titler", 0.7), ("coder", 0.1)]
    fresh = plan_route(SETTINGS, request, [changed], matches, model=model)
    assert fresh.route == "adapter"
    stale = plan_route(
        SETTINGS, request, [changed], matches, None, {"titler": frozenset({"d1"})}, model=model
    )
    assert (stale.route, stale.adapter) == ("adapter+rag", "titler")
    assert "earlier revision of the documents" in stale.reason
    assert "a.md" in stale.reason
    assert stale.features["adapter_stale"] == 1.0
    assert [h.chunk_id for h in stale.evidence] == ["c1"]
