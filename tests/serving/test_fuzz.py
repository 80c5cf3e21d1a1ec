"""Fuzz the running API from its own OpenAPI document (schemathesis): whatever it is sent, no
5xx, and every response matches the document (status codes, content types, bodies).

`ragtune serve` runs as its own process against the shared engine, with a low
`RAGTUNE_MAX_TOKENS_LIMIT` so that the valid requests generate little; examples are
derandomized, so a CI run is reproducible and bounded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from ragtune.serving.settings import EngineSettings
from tests.support.cli import ragtune_serve
from tests.support.servers import free_port
from tests.support.serving import attach_env, copy_of

pytestmark = pytest.mark.engine
ADMIN = "fuzz-admin"


@pytest.fixture(scope="module")
def fuzz_server(
    ingested: tuple[Path, Any],
    engine: EngineSettings,
    models_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    data_dir = copy_of(ingested[0], tmp_path_factory, "fuzz")
    with ragtune_serve(
        data_dir,
        free_port(),
        **attach_env(engine, models_dir),
        RAGTUNE_ADMIN_API_KEYS=ADMIN,  # an admin key may call every endpoint
        RAGTUNE_MAX_TOKENS_LIMIT="8",
        RAGTUNE_LOG_LEVEL="warning",
    ) as url:
        yield url


def test_no_5xx_and_responses_match_the_schema(fuzz_server: str) -> None:
    """Every operation of GET /openapi.json, 30 derandomized examples each (valid and
    invalid data). Driven here rather than by schemathesis' pytest plugin, whose lazy
    fixture loading does not work with pytest 9.2."""
    schema = schemathesis.openapi.from_url(
        f"{fuzz_server}/openapi.json", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {
        "POST /v1/chat/completions", "POST /v1/responses", "GET /v1/models", "GET /admin/adapters",
        "POST /admin/adapters", "POST /admin/adapters/{name}/swap", "POST /v1/embeddings",
    }  # fmt: skip
    checked = []
    for operation in operations:

        @settings(
            max_examples=30,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def fuzz(case: Any) -> None:
            case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN}"},
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
                timeout=120,
            )

        fuzz()
        checked.append(operation.label)
    assert len(checked) == len(operations)
