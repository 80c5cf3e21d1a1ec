"""How an answer is scored against a task's reference answer: ROUGE-L, exact match, JSON-valid,
JSON-schema-valid, or a user's own Python scorer named by import path (`module:function`).

Usage:
    scorer = load_scorer("rouge-l")                      # or "my_pkg.scoring:grade"
    scorer.score("Solar cells in humid air", "Solar cells in humid air.")   # 1.0
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.evals.errors import ScorerError

BUILT_IN = ("rouge-l", "exact", "json-valid", "json-schema")


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F1 on lowercased words (longest common subsequence)."""
    a, b = words(candidate), words(reference)
    if not a or not b:
        return 0.0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(a), lcs / len(b)
    return 2 * precision * recall / (precision + recall)


def exact(candidate: str, reference: str) -> float:
    return float(" ".join(words(candidate)) == " ".join(words(reference)))


def parse_json(text: str) -> Any:
    """The JSON value an answer holds: the whole answer, or the body of one ```json fence around
    it (models fence JSON often); raises ValueError when there is none."""
    body = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", body, flags=re.DOTALL)
    return json.loads(fenced.group(1) if fenced else body)


def json_valid(candidate: str, reference: str = "") -> float:
    try:
        parse_json(candidate)
    except ValueError:
        return 0.0
    return 1.0


@dataclass(frozen=True)
class Scorer:
    """One metric: a name and a function (answer, reference) -> 0..1."""

    name: str
    function: Callable[[str, str], float]

    def score(self, candidate: str, reference: str) -> float:
        value = self.function(candidate, reference)
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ScorerError(f"scorer {self.name} returned {value!r}, not a number")
        return float(value)


def schema_scorer(schema: Mapping[str, Any]) -> Scorer:
    """1.0 when the answer is JSON that the schema accepts."""
    import jsonschema

    try:
        validator_class = jsonschema.validators.validator_for(schema)
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ScorerError(f"the JSON schema is not valid: {exc.message}") from exc
    validator = validator_class(schema)

    def valid(candidate: str, reference: str) -> float:
        try:
            value = parse_json(candidate)
        except ValueError:
            return 0.0
        return float(validator.is_valid(value))

    return Scorer("json-schema", valid)


def read_schema(path: Path) -> dict[str, Any]:
    try:
        schema = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ScorerError(f"cannot read the JSON schema {path}: {exc}") from exc
    if not isinstance(schema, dict):
        raise ScorerError(f"{path} is not a JSON schema (an object)")
    return schema


def load_scorer(name: str, schema: Mapping[str, Any] | None = None) -> Scorer:
    """A built-in metric by name, or a user's scorer `package.module:function` (a function of
    (answer, reference) returning a number in 0..1). `json-schema` needs `schema`."""
    if name == "rouge-l":
        return Scorer(name, rouge_l)
    if name == "exact":
        return Scorer(name, exact)
    if name == "json-valid":
        return Scorer(name, json_valid)
    if name == "json-schema":
        if schema is None:
            raise ScorerError("the json-schema metric needs a schema: pass --schema FILE")
        return schema_scorer(schema)
    module_name, _, attribute = name.partition(":")
    if not attribute or not module_name:
        raise ScorerError(
            f"unknown metric {name!r}: use one of {', '.join(BUILT_IN)} or a scorer as "
            "package.module:function"
        )
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ScorerError(f"cannot import the scorer {name!r}: {exc}") from exc
    if not callable(function):
        raise ScorerError(f"the scorer {name!r} is not a function")
    return Scorer(name, function)
