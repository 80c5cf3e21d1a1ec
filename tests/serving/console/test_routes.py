"""The console's login, sessions and CSRF checks, and its escaping, through the app's own
routes (TestClient, fakes at the edges; the browser tests drive the same pages in Chromium)."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.support.console import ADMIN, CHAT, HOSTILE, FakeEngine, console_app, register


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    register(tmp_path, "titler", "Write the title of an article.", verdict="prompting")
    app = console_app(tmp_path, FakeEngine(), auth_failure_limit=60, auth_failure_burst=3)
    with TestClient(app, base_url="https://console.test") as test_client:
        yield test_client


def log_in(client: TestClient, key: str = ADMIN) -> httpx.Response:
    form = client.get("/console/login").text
    token = re.search(r'name="login_token" value="([^"]+)"', form)
    assert token is not None
    return client.post(
        "/console/login", data={"key": key, "login_token": token[1]}, follow_redirects=False
    )


def csrf(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def test_a_login_opens_a_session_in_a_strict_http_only_cookie(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        response = log_in(client)
    assert (response.status_code, response.headers["location"]) == (303, "/console")
    cookie = next(c for c in response.headers.get_list("set-cookie") if "ragtune_console=" in c)
    assert all(part in cookie for part in ("HttpOnly", "Path=/console", "SameSite=strict"))
    assert "Secure" in cookie  # the request came over https
    assert ADMIN not in cookie
    page = client.get("/console")
    assert page.status_code == 200
    assert "content-security-policy" in page.headers
    assert ADMIN not in page.text
    assert ADMIN not in caplog.text


def test_without_a_session_the_console_sends_to_the_login(client: TestClient) -> None:
    response = client.get("/console", follow_redirects=False)
    assert (response.status_code, response.headers["location"]) == (303, "/console/login")
    panel = client.get("/console/panels/adapters", headers={"hx-request": "true"})
    assert panel.headers["hx-redirect"] == "/console/login"


def test_chat_keys_and_wrong_keys_are_refused_and_wrong_ones_throttled(
    client: TestClient,
) -> None:
    chat = log_in(client, CHAT)
    assert chat.status_code == 403
    assert "may chat but not operate" in chat.text
    assert [log_in(client, "guess").status_code for _ in range(4)] == [401, 401, 401, 429]
    assert log_in(client, ADMIN).status_code == 429  # the address waits, whatever it sends


def test_a_login_without_the_form_token_is_refused(client: TestClient) -> None:
    client.get("/console/login")
    response = client.post("/console/login", data={"key": ADMIN}, follow_redirects=False)
    assert response.status_code == 403


def test_state_changes_need_the_session_csrf_token(client: TestClient) -> None:
    log_in(client)
    token = csrf(client.get("/console").text)
    assert client.post("/console/adapters/titler/unload").status_code == 403
    refused = client.post("/console/adapters/titler/unload", data={"csrf_token": "x" + token})
    assert refused.status_code == 403
    done = client.post("/console/adapters/titler/unload", headers={"x-csrf-token": token})
    assert "titler unloaded." in done.text
    assert client.get("/console/adapters/titler/unload").status_code == 405


def test_logout_ends_the_session(client: TestClient) -> None:
    log_in(client)
    token = csrf(client.get("/console").text)
    response = client.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert response.headers["location"] == "/console/login"
    client.cookies.clear()
    assert client.get("/console", follow_redirects=False).status_code == 303


def test_document_names_and_texts_are_escaped(client: TestClient) -> None:
    log_in(client)
    listing = client.get("/console/collections/default/documents").text
    assert HOSTILE not in listing
    assert "&lt;script&gt;window.pwned = 1&lt;/script&gt;" in listing
    token = csrf(client.get("/console").text)
    answer = client.post(
        "/console/chat",
        data={"question": f"closing notes for the weekends {HOSTILE}", "csrf_token": token},
    ).text
    assert "<script>" not in answer


def test_files_attached_over_the_api_show_as_ingestion_jobs_with_their_outcome(
    client: TestClient,
) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    client.post("/v1/vector_stores", json={"name": "handbook"}, headers=admin)
    for name, content in (("refunds.md", b"# Refunds\n\nRefunds take ten days.\n"),
                          ("empty.md", b"")):  # fmt: skip
        uploaded = client.post(
            "/v1/files", files={"file": (name, content)}, data={"purpose": "assistants"},
            headers=admin,
        )  # fmt: skip
        assert uploaded.status_code == 200, uploaded.text
        attached = client.post(
            "/v1/vector_stores/handbook/files", json={"file_id": uploaded.json()["id"]},
            headers=admin,
        )  # fmt: skip
        assert attached.status_code == 200, attached.text
        for _ in range(200):
            state = client.get(
                f"/v1/vector_stores/handbook/files/{uploaded.json()['id']}", headers=admin
            ).json()
            if state["status"] != "in_progress":
                break
            time.sleep(0.05)
    log_in(client)
    panel = client.get("/console/panels/collections").text
    assert re.search(r"refunds\.md \(handbook\): completed", panel)
    assert re.search(r"empty\.md \(handbook\): failed", panel)
    assert "empty file" in panel  # the CLI's reason for the file


def test_an_upload_needs_the_csrf_token_and_becomes_an_ingestion_job(client: TestClient) -> None:
    log_in(client)
    token = csrf(client.get("/console").text)
    sent = {"file": ("notes.md", b"# Notes\n\nRefunds take ten days.\n", "text/markdown")}
    refused = client.post("/console/upload", files=sent, data={"collection": "uploads"})
    assert refused.status_code == 403
    panel = client.post(
        "/console/upload", files=sent, data={"collection": "uploads", "csrf_token": token}
    )
    assert panel.status_code == 200, panel.text
    assert "notes.md: uploaded, ingesting into uploads." in panel.text
    for _ in range(200):
        panel = client.get("/console/panels/collections")
        if "notes.md (uploads): completed" in panel.text:
            break
        time.sleep(0.05)
    assert "notes.md (uploads): completed" in panel.text
    bad = client.post(
        "/console/upload",
        files={"file": ("tool.exe", b"MZ", "application/octet-stream")},
        data={"collection": "uploads", "csrf_token": token},
    )
    assert "unsupported file type &#39;.exe&#39;" in bad.text  # the API's reason, escaped
