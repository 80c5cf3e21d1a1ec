"""Two tenants on one server: every endpoint tried with the other tenant's key leaks nothing of
the first (no collection or adapter name, no passage text, no source path), in bodies, error
messages, streams, the model list, or the prompt sent to the engine. The app is built by the
factory over fakes at the edges (an engine behind `httpx.MockTransport`, the fake embedder, the
in-memory store): seconds, no model."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from ragtune.adapters.registry import MANIFEST, AdapterManifest, AdapterRegistry
from ragtune.adapters.settings import AdapterSettings
from ragtune.retrieval.settings import RetrievalSettings
from ragtune.retrieval.store import ChunkRecord
from ragtune.serving.app import create_app
from ragtune.serving.components import Components, assemble
from ragtune.serving.engine.pool import EnginePool
from ragtune.serving.settings import ApiSettings, EngineSettings, RouterSettings, ServingSettings
from ragtune.serving.tenants.service import RECHECK_S, KeyStore, keys_path
from tests.support.fake_engine import BASE, FakeEngine
from tests.support.fakes import FakeEmbedder, FakeTokenizer, InMemoryStore

CHAT, ADMIN = "chat-key", "admin-key"
ALPHA_TASK = "Translate zorblat glyphs into quenton runes for the alpha archive."
# What tenant "alpha" owns, none of which tenant "beta" may ever see.
ALPHA_SECRETS = (
    "alpha-docs",  # its collection
    "alpha-titler",  # its adapter
    "ZORBLAT-CONFIDENTIAL",  # its passage's text
    "/srv/alpha",  # its document's path on the server
    "merger-plan",  # its document's name
    "zorblat glyphs",  # its adapter's task
)
QUESTION = "Within how many days of the refund request are invoices refunded?"


@dataclass
class Tenants:
    client: TestClient
    engine: FakeEngine
    alpha: str
    beta: str
    alpha_id: str


def register(data_dir: Path, name: str, task: str) -> None:
    manifest = AdapterManifest(
        name=name, base_model=BASE, rank=8, alpha=16, target_modules=["q_proj"], task=task,
        examples=[], weights_sha256="0" * 64, created="2025-01-01T00:00:00Z",
    )  # fmt: skip
    folder = AdapterRegistry(AdapterSettings(data_dir=data_dir).adapters_dir).path(manifest)
    folder.mkdir(parents=True)
    (folder / MANIFEST).write_text(manifest.model_dump_json())


def settings_for(data_dir: Path, **api: Any) -> ServingSettings:
    # /metrics as by default: with tenant keys, admin only.
    return ServingSettings(
        retrieval=RetrievalSettings(data_dir=data_dir),
        engine=EngineSettings(data_dir=data_dir, max_model_len=2048, vllm_url="http://engine"),
        adapters=AdapterSettings(data_dir=data_dir),
        router=RouterSettings(),
        api=ApiSettings(api_keys=CHAT, admin_api_keys=ADMIN, **api),
    )


def components(settings: ServingSettings, engine: FakeEngine) -> Components:
    embedder = FakeEmbedder()
    store = InMemoryStore()
    documents = {
        "alpha-docs": ("ZORBLAT-CONFIDENTIAL merger: invoices are refunded within thirty days "
                       "of the refund request.", "/srv/alpha/merger-plan.md"),
        "beta-docs": ("Beta handbook: invoices are refunded within ninety days of the refund "
                      "request.", "/srv/beta/handbook.md"),
        "default": ("Operator notes: invoices are refunded within ten days of the refund "
                    "request.", "/srv/ops/notes.md"),
    }  # fmt: skip
    for name, (text, source) in documents.items():
        metadata: dict[str, str | int] = {
            "source": source,
            "display_source": Path(source).name,
            "doc_id": Path(source).stem,
            "section": "Refunds",
        }
        store.collection(name, embedder.model_id, create=True).add(
            [ChunkRecord(f"{name}-1", text, metadata, embedder.embed([text])[0])]
        )
    pool = EnginePool([engine.client()], slots=4)
    return assemble(
        settings, store=store, embedder=embedder, engines=pool, tokenizer=FakeTokenizer(),
        base_model=BASE,
    )  # fmt: skip


@pytest.fixture
def tenants(tmp_path: Path) -> Iterator[Tenants]:
    register(tmp_path, "alpha-titler", ALPHA_TASK)
    register(tmp_path, "beta-writer", "Write a short poem about the sea and its waves.")
    keys = KeyStore(keys_path(tmp_path))
    alpha = keys.create(["alpha-docs"], ["alpha-titler"], name="alpha")
    beta = keys.create(["beta-docs"], ["beta-writer"], name="beta")
    settings = settings_for(tmp_path)
    engine = FakeEngine()
    app = create_app(settings, open_parts=lambda given: components(given, engine))
    with TestClient(app) as client:
        yield Tenants(client, engine, alpha.key, beta.key, alpha.stored.id)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def stopped_clock(client: TestClient) -> list[float]:
    """Stop the clock by which the server's key store looks at its file again; add to [0] to
    move it on (no test sleeps through RECHECK_S)."""
    store: KeyStore = client.app.state.keys  # type: ignore[attr-defined]
    now = [time.monotonic()]
    store.clock = lambda: now[0]
    return now


def assert_nothing_of_alpha(text: str) -> None:
    for secret in ALPHA_SECRETS:
        assert secret.lower() not in text.lower(), f"{secret!r} leaked: {text[:500]}"


def chat_body(model: str = BASE, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": QUESTION}], **fields}


def test_each_tenant_searches_only_its_own_collection(tenants: Tenants) -> None:
    client = tenants.client
    beta = client.post("/v1/chat/completions", json=chat_body(), headers=bearer(tenants.beta))
    alpha = client.post("/v1/chat/completions", json=chat_body(), headers=bearer(tenants.alpha))

    assert beta.status_code == alpha.status_code == 200
    assert [s["document"] for s in beta.json()["ragtune"]["sources"]] == ["handbook.md"]
    assert [s["document"] for s in alpha.json()["ragtune"]["sources"]] == ["merger-plan.md"]
    beta_prompt, alpha_prompt = (
        json.dumps(body) for body in tenants.engine.sent("/v1/chat/completions")
    )
    assert_nothing_of_alpha(beta_prompt)
    assert "ninety days" in beta_prompt
    assert "ZORBLAT-CONFIDENTIAL merger" in alpha_prompt
    assert "Operator notes" not in alpha_prompt + beta_prompt  # the server's default collection


def test_the_router_never_chooses_another_tenants_adapter(tenants: Tenants) -> None:
    client = tenants.client
    asked = {"model": BASE, "messages": [{"role": "user", "content": ALPHA_TASK}]}
    alpha = client.post("/v1/chat/completions", json=asked, headers=bearer(tenants.alpha))
    beta = client.post("/v1/chat/completions", json=asked, headers=bearer(tenants.beta))

    assert alpha.json()["ragtune"]["adapter"] == "alpha-titler"  # the task matches: chosen
    assert beta.status_code == 200
    assert beta.json()["ragtune"]["adapter"] is None
    assert_nothing_of_alpha(beta.text.replace(ALPHA_TASK, ""))  # less the question it asked
    assert "x-ragtune-adapter" not in beta.headers
    # The adapter route forced without naming one: only the tenant's own can be taken.
    forced = client.post(
        "/v1/chat/completions",
        json={**asked, "ragtune": {"route": "adapter"}},
        headers=bearer(tenants.beta),
    )
    assert forced.json()["ragtune"]["adapter"] == "beta-writer"


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/responses"])
def test_another_tenants_names_are_refused_as_names_that_do_not_exist(
    tenants: Tenants, path: str, stream: bool
) -> None:
    client = tenants.client

    def ask(model: str = BASE, collection: str | None = None) -> httpx.Response:
        if path == "/v1/responses":
            body: dict[str, Any] = {"model": model, "input": QUESTION, "stream": stream}
        else:
            body = chat_body(model, stream=stream)
        if collection is not None:
            body["ragtune"] = {"collection": collection}
        return client.post(path, json=body, headers=bearer(tenants.beta))

    for field, theirs, missing in (
        ("model", "alpha-titler", "gamma-titler"),
        ("collection", "alpha-docs", "gamma-docs"),
    ):
        refused = ask(**{field: theirs})
        unknown = ask(**{field: missing})
        assert refused.status_code == unknown.status_code == 404
        # Byte for byte the same answer as for a name that does not exist (the name aside).
        assert refused.text.replace(theirs, missing) == unknown.text
        assert refused.text.count(theirs) == unknown.text.count(missing)
    own = ask()
    assert own.status_code == 200
    assert_nothing_of_alpha(own.text)


def test_the_model_list_shows_only_the_tenants_adapters(tenants: Tenants) -> None:
    client = tenants.client

    def ids(key: str) -> list[str]:
        listed = client.get("/v1/models", headers=bearer(key)).json()["data"]
        return [model["id"] for model in listed]

    assert ids(tenants.beta) == [BASE, "beta-writer", "fake-bow-64"]
    assert ids(tenants.alpha) == [BASE, "alpha-titler", "fake-bow-64"]
    assert ids(CHAT) == [BASE, "alpha-titler", "beta-writer", "fake-bow-64"]
    assert_nothing_of_alpha(client.get("/v1/models", headers=bearer(tenants.beta)).text)


def test_operator_endpoints_refuse_a_tenants_key(tenants: Tenants) -> None:
    client = tenants.client
    key = bearer(tenants.beta)
    calls = [
        ("GET", "/admin/keys", None),
        ("POST", "/admin/keys", {"collections": ["alpha-docs"], "adapters": ["alpha-titler"]}),
        ("DELETE", f"/admin/keys/{tenants.alpha_id}", None),
        ("GET", "/admin/adapters", None),
        ("GET", "/admin/adapters/alpha-titler", None),
        ("POST", "/admin/adapters/alpha-titler/unload", None),
        ("GET", "/metrics", None),
        ("GET", "/openapi.json", None),
    ]
    for method, path, body in calls:
        response = client.request(method, path, json=body, headers=key)
        assert response.status_code == 403, (path, response.text)
        assert response.json()["error"]["code"] == "insufficient_scope"
        assert_nothing_of_alpha(response.text)
    # Nothing was changed: alpha's key still works.
    alpha = client.post("/v1/chat/completions", json=chat_body(), headers=bearer(tenants.alpha))
    assert alpha.status_code == 200


def test_other_endpoints_with_a_tenants_key_leak_nothing(tenants: Tenants) -> None:
    client = tenants.client
    key = bearer(tenants.beta)
    embedded = client.post(
        "/v1/embeddings", json={"model": "fake-bow-64", "input": "refunds"}, headers=key
    )
    assert embedded.status_code == 200
    for path in ("/health", "/ready"):
        assert_nothing_of_alpha(client.get(path, headers=key).text)
    # A name the client sent may be echoed, exactly as one that does not exist is.
    for method, path, body in (
        ("POST", "/v1/embeddings", {"model": "{}", "input": "x"}),
        ("GET", "/v1/models/{}", None),
        ("GET", "/v1/files/{}", None),
    ):
        answers = [
            client.request(
                method,
                path.format(name),
                json=json.loads(json.dumps(body).replace("{}", name)) if body else None,
                headers=key,
            )
            for name in ("alpha-titler", "gamma-titler")
        ]
        assert answers[0].status_code == answers[1].status_code
        assert answers[0].text.replace("alpha-titler", "gamma-titler") == answers[1].text


def test_keys_are_managed_over_the_admin_api_and_take_effect_at_once(tenants: Tenants) -> None:
    client = tenants.client
    admin = bearer(ADMIN)

    created = client.post(
        "/admin/keys", json={"collections": ["beta-docs"], "name": "gamma"}, headers=admin
    )
    assert created.status_code == 201
    key, key_id = created.json()["key"], created.json()["id"]
    assert client.get("/v1/models", headers=bearer(key)).json()["data"][1]["id"] == "fake-bow-64"
    listed = client.get("/admin/keys", headers=admin)
    assert [k["name"] for k in listed.json()] == ["alpha", "beta", "gamma"]
    assert "sha256" not in listed.text
    assert key not in listed.text

    assert client.delete(f"/admin/keys/{key_id}", headers=admin).status_code == 204
    refused = client.get("/v1/models", headers=bearer(key))
    assert refused.status_code == 401
    assert key not in refused.text
    missing = client.delete(f"/admin/keys/{key_id}", headers=admin)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "key_not_found"
    bad = client.post("/admin/keys", json={"collections": []}, headers=admin)
    assert (bad.status_code, bad.json()["error"]["param"]) == (400, "collections")


def test_a_key_revoked_by_another_process_is_refused_without_a_restart(
    tenants: Tenants, tmp_path: Path
) -> None:
    client = tenants.client
    now = stopped_clock(client)
    assert client.get("/v1/models", headers=bearer(tenants.alpha)).status_code == 200

    KeyStore(keys_path(tmp_path)).revoke(tenants.alpha_id)  # as `ragtune keys revoke` does
    now[0] += RECHECK_S

    assert client.get("/v1/models", headers=bearer(tenants.alpha)).status_code == 401
    assert client.get("/v1/models", headers=bearer(tenants.beta)).status_code == 200


def test_keys_never_reach_the_log(tenants: Tenants, caplog: pytest.LogCaptureFixture) -> None:
    client = tenants.client
    with caplog.at_level("DEBUG"):
        created = client.post(
            "/admin/keys", json={"collections": ["x-docs"]}, headers=bearer(ADMIN)
        )
        key = created.json()["key"]
        client.get("/v1/models", headers=bearer(key))
        client.get("/v1/models", headers=bearer(key + "x"))
        client.post("/v1/chat/completions", json=chat_body(), headers=bearer(tenants.beta))
    logged = caplog.text + "".join(str(r.__dict__) for r in caplog.records)
    for secret in (key, tenants.alpha, tenants.beta):
        assert secret not in logged
        assert secret.split("_", 2)[2] not in logged  # the secret part alone
    assert ADMIN not in logged


def test_a_damaged_keys_file_admits_no_tenant_and_names_no_path(
    tenants: Tenants, tmp_path: Path
) -> None:
    client = tenants.client
    now = stopped_clock(client)
    keys_path(tmp_path).write_text("{damaged")
    now[0] += RECHECK_S

    refused = client.get("/v1/models", headers=bearer(tenants.beta))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "key_store_unavailable"
    assert str(tmp_path) not in refused.text
    assert client.get("/v1/models", headers=bearer(CHAT)).status_code == 200


def test_metrics_are_public_until_a_tenant_key_exists(tmp_path: Path) -> None:
    """`/metrics` names every adapter: public by default only while the server has no tenants;
    `RAGTUNE_METRICS_PUBLIC=true` keeps it public (the operator's choice)."""
    register(tmp_path, "alpha-titler", ALPHA_TASK)
    engine = FakeEngine()
    app = create_app(settings_for(tmp_path), open_parts=lambda given: components(given, engine))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200
        created = client.post(
            "/admin/keys", json={"collections": ["alpha-docs"]}, headers=bearer(ADMIN)
        )
        assert created.status_code == 201, created.text
        assert client.get("/metrics").status_code == 401
        tenant = client.get("/metrics", headers=bearer(created.json()["key"]))
        assert tenant.status_code == 403
        assert "alpha-titler" not in tenant.text
        assert client.get("/metrics", headers=bearer(ADMIN)).status_code == 200
    public = settings_for(tmp_path, metrics_public=True)
    app = create_app(public, open_parts=lambda given: components(given, engine))
    with TestClient(app) as client:
        assert client.get("/metrics").status_code == 200
