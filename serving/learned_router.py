"""The learned router (`ragtune router train`): a small classifier from the router's
decision-time features to the route that answered best, read from a JSON file and evaluated here
with numpy in microseconds.

JSON and not a pickle: a router file is copied between machines by operators, and loading it must
not be able to run code. Two kinds are stored: a (multinomial) logistic regression over
standardised features, and gradient-boosted regression trees (scikit-learn's
`GradientBoostingClassifier`, its trees written out node by node); both reproduce scikit-learn's
own decision function (tested).

Usage:
    model = load_route_model(path, embedding_model="sentence-transformers/all-MiniLM-L6-v2")
    choice = model.choose(features, allowed=("rag", "base"))
    choice.route, choice.probability, choice.top_features
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np

from ragtune.retrieval.embedder import same_model
from ragtune.serving.errors import RouteModelError
from ragtune.serving.router import FEATURES, FEATURES_REVISION, Route

FORMAT = "ragtune-route-model"
VERSION = 1
Kind = Literal["logistic", "boosting"]


@dataclass(frozen=True)
class RouteChoice:
    route: Route
    probability: float
    """The model's probability for the route among the routes allowed for the request."""
    top_features: tuple[str, ...]
    """The features that weigh most for this choice, most first: those whose replacement by
    their training mean lowers the chosen route's probability the most."""


class _Forest:
    """Every tree of a boosted model in padded arrays, evaluated on a batch of feature vectors
    at once (a few numpy steps per level, not a Python loop per tree: the decision stays well
    under a millisecond with hundreds of trees). Thresholds compare with the features as
    float32, as scikit-learn's trees do."""

    def __init__(self, stages: Sequence[Sequence[Mapping[str, Any]]]) -> None:
        trees = [(column, tree) for stage in stages for column, tree in enumerate(stage)]
        size = max(len(tree["left"]) for _, tree in trees)
        shape = (len(trees), size)
        self.left = np.full(shape, -1, dtype=np.int64)
        self.right = np.full(shape, -1, dtype=np.int64)
        self.feature = np.zeros(shape, dtype=np.int64)
        self.threshold = np.zeros(shape, dtype=np.float64)
        self.value = np.zeros(shape, dtype=np.float64)
        self.columns = np.zeros((len(trees), len(stages[0]) if stages else 0))
        for row, (column, tree) in enumerate(trees):
            n = len(tree["left"])
            self.left[row, :n] = tree["left"]
            self.right[row, :n] = tree["right"]
            self.feature[row, :n] = np.maximum(np.asarray(tree["feature"]), 0)  # leaves: -2
            self.threshold[row, :n] = tree["threshold"]
            self.value[row, :n] = tree["value"]
            self.columns[row, column] = 1.0
        self.rows = np.arange(len(trees))

    def predict(self, x: np.ndarray) -> np.ndarray:
        """(batch, features) -> (batch, columns): each column's sum of its trees' leaves."""
        x32 = x.astype(np.float32)
        batch = np.arange(len(x))[:, None]
        node = np.zeros((len(x), len(self.rows)), dtype=np.int64)
        for _ in range(self.left.shape[1]):
            left = self.left[self.rows, node]
            inner = left != -1
            if not inner.any():
                break
            goes_left = x32[batch, self.feature[self.rows, node]] <= self.threshold[self.rows, node]
            node = np.where(inner, np.where(goes_left, left, self.right[self.rows, node]), node)
        return np.asarray(self.value[self.rows, node] @ self.columns)


class RouteModel:
    """A learned router read from its JSON form (`to_dict`). Scores come out per class
    (`classes`, the routes it was trained on) as logits; `choose` keeps the allowed ones."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = dict(data)
        self.kind: Kind = data["kind"]
        self.features: tuple[str, ...] = tuple(data["features"])
        self.classes: tuple[Route, ...] = tuple(data["classes"])
        self.embedding_model: str = data["embedding_model"]
        self.baseline = np.asarray(data["baseline"], dtype=np.float64)
        """The training mean of each feature (what an explanation replaces a feature by)."""
        self.trained: dict[str, Any] = dict(data.get("trained", {}))
        if self.kind == "logistic":
            params = data["logistic"]
            self._mean = np.asarray(params["mean"], dtype=np.float64)
            self._scale = np.asarray(params["scale"], dtype=np.float64)
            self._coef = np.asarray(params["coef"], dtype=np.float64)
            self._intercept = np.asarray(params["intercept"], dtype=np.float64)
        else:
            params = data["boosting"]
            self._init = np.asarray(params["init"], dtype=np.float64)
            self._rate = float(params["learning_rate"])
            self._forest = _Forest(params["trees"])

    def logits(self, x: np.ndarray) -> np.ndarray:
        """One logit per class for one feature vector, or a row of them per vector of a batch
        (scikit-learn's decision function; a two-class model's single score becomes
        (0, score))."""
        batch = np.atleast_2d(x)
        if self.kind == "logistic":
            raw = ((batch - self._mean) / self._scale) @ self._coef.T + self._intercept
        else:
            raw = self._init + self._rate * self._forest.predict(batch)
        if len(self.classes) == 2 and raw.shape[1] == 1:
            raw = np.hstack([np.zeros_like(raw), raw])
        return np.asarray(raw if x.ndim == 2 else raw[0])

    def probabilities(self, x: np.ndarray, allowed: Sequence[int]) -> np.ndarray:
        """Softmax over the allowed classes' logits (per row of a batch)."""
        logits = self.logits(x)[..., list(allowed)]
        exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
        return np.asarray(exp / exp.sum(axis=-1, keepdims=True))

    def vector(self, features: Mapping[str, float]) -> np.ndarray:
        return np.array([float(features.get(name, 0.0)) for name in self.features])

    def choose(
        self, features: Mapping[str, float], allowed: Collection[Route], explain: int = 2
    ) -> RouteChoice | None:
        """The allowed route the model rates best, with the features that weigh most for it;
        None when the model knows none of the allowed routes."""
        indices = [i for i, route in enumerate(self.classes) if route in allowed]
        if not indices:
            return None
        x = self.vector(features)
        # The vector itself, then one copy per feature moved to its training mean: one batch.
        moved = [j for j in range(len(x)) if explain and x[j] != self.baseline[j]]
        batch = np.repeat(x[None, :], 1 + len(moved), axis=0)
        batch[1 + np.arange(len(moved)), moved] = self.baseline[moved]
        probabilities = self.probabilities(batch, indices)
        best = int(np.argmax(probabilities[0]))
        chosen = probabilities[0, best]
        drops = sorted(
            ((chosen - probabilities[1 + i, best], self.features[j]) for i, j in enumerate(moved)),
            reverse=True,
        )
        top = tuple(name for drop, name in drops[:explain] if drop > 0)
        return RouteChoice(self.classes[indices[best]], float(chosen), top)

    def describe(self) -> str:
        cases = self.trained.get("cases")
        trained = f", trained on {cases} cases" if cases else ""
        name = "logistic regression" if self.kind == "logistic" else "gradient boosting"
        return f"learned router ({name}{trained})"

    def to_dict(self) -> dict[str, Any]:
        return self.data

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(path.name + ".tmp")
        staging.write_text(json.dumps(self.data, indent=1) + "\n", encoding="utf-8")
        staging.replace(path)


def model_data(
    kind: Kind,
    classes: Sequence[str],
    embedding_model: str,
    baseline: Sequence[float],
    params: Mapping[str, Any],
    trained: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON form of a learned router (`RouteModel(model_data(...))`)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "kind": kind,
        "features": list(FEATURES),
        "features_revision": FEATURES_REVISION,
        "classes": list(classes),
        "embedding_model": embedding_model,
        "baseline": [float(v) for v in baseline],
        kind: dict(params),
        "trained": dict(trained),
    }


def load_route_model(path: Path, *, embedding_model: str) -> RouteModel:
    """The learned router stored at `path`, checked against this server: its format, the
    feature schema and revision the router computes and the embedding model its similarities
    come from.
    RouteModelError says what is wrong and what to do."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RouteModelError(f"no learned router at {path}: `ragtune router train`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RouteModelError(f"cannot read the learned router {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise RouteModelError(f"{path} is not a ragtune learned router (`ragtune router train`)")
    if data.get("version") != VERSION:
        raise RouteModelError(
            f"{path} is a learned router of format version {data.get('version')!r}; this "
            f"ragtune reads version {VERSION}: train it again (`ragtune router train`)"
        )
    if data.get("features") != list(FEATURES):
        raise RouteModelError(
            f"{path} was trained on other router features ({_listed(data.get('features'))}) "
            f"than this ragtune computes ({', '.join(FEATURES)}): collect outcomes and train it "
            "again (`ragtune router collect`, `ragtune router train`)"
        )
    revision = data.get("features_revision", 1)
    if revision != FEATURES_REVISION:
        raise RouteModelError(
            f"{path} was trained on revision {revision!r} of the router's features, and this "
            f"ragtune computes revision {FEATURES_REVISION} (since 2026-12-08 a follow-up's word "
            "overlap reads the conversation's query, not its own words): train it again "
            "(`ragtune router train`; follow-ups collected before are left out, collect them "
            "again)"
        )
    if not same_model(data.get("embedding_model"), embedding_model):
        raise RouteModelError(
            f"{path} was trained with similarities from the embedding model "
            f"{data.get('embedding_model')!r}, but this server embeds with {embedding_model!r}: "
            "its scores would mean something else; train it again with this model"
        )
    try:
        model = RouteModel(data)
        routes = cast(tuple[str, ...], get_args(Route))
        if not model.classes or any(c not in routes for c in model.classes):
            raise ValueError(f"unknown routes {model.classes}")
        probe = model.logits(model.baseline)
        if probe.shape != (len(model.classes),) or not all(math.isfinite(v) for v in probe):
            raise ValueError("its scores do not fit its routes")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise RouteModelError(
            f"{path} is a damaged learned router ({exc}): train it again (`ragtune router train`)"
        ) from None
    return model


def _listed(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "none"
    return repr(value)
