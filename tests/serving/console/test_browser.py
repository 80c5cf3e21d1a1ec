"""The operator console in a real browser (headless Chromium) against a real uvicorn serving
the app over fakes at the edges: log in, see adapters and collections, upload a document and
see its ingestion finish, swap an adapter, ask in the playground; wrong keys, forged POSTs and
hostile document names get nowhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.console import (
    ADMIN,
    CHAT,
    HOSTILE,
    REFUND_QUESTION,
    FakeEngine,
    console_app,
    live_server,
    new_version,
    register,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """The console's base URL, and a folder for adapter versions to swap in."""
    data_dir = tmp_path_factory.mktemp("console") / "data"
    register(data_dir, "titler", "Write the title of an article.", verdict="adapter")
    register(data_dir, "summarizer", "Summarize a support ticket.")
    with live_server(console_app(data_dir, FakeEngine())) as url:
        yield url, tmp_path_factory.mktemp("versions")


def log_in(page: Any, url: str, key: str = ADMIN) -> None:
    page.goto(f"{url}/console/login")
    page.fill("#key", key)
    page.click("button[type=submit]")


def test_an_operator_logs_in_and_sees_adapters_and_collections(
    page: Any, server: tuple[str, Path]
) -> None:
    url, _ = server
    log_in(page, url)
    page.wait_for_url(f"{url}/console")
    titler = page.locator("tr[data-adapter=titler]")
    assert titler.locator(".name").inner_text() == "titler"
    assert re.fullmatch(r"v\d+", titler.locator(".version").inner_text())
    assert titler.locator(".verdict").inner_text() == "adapter"
    assert titler.locator(".residency").inner_text() == "loaded"
    default = page.locator("tr[data-collection=default]")
    assert default.locator(".chunks").inner_text() == "3"
    # The key is nowhere in what the browser holds.
    assert ADMIN not in page.content()
    assert all(ADMIN not in c["value"] for c in page.context.cookies())
    assert ADMIN not in page.url


def test_swapping_an_adapter_shows_its_new_version(page: Any, server: tuple[str, Path]) -> None:
    url, versions = server
    log_in(page, url)
    row = page.locator("tr[data-adapter=summarizer]")
    assert row.locator(".version").inner_text() == "v1"
    row.locator("input[name=path]").fill(str(new_version(versions / "summarizer-v2")))
    row.locator("form.swap button").click()
    page.locator("#adapters .notice").wait_for()
    assert page.locator("#adapters .notice").inner_text() == "summarizer now serves v2."
    assert page.locator("tr[data-adapter=summarizer] .version").inner_text() == "v2"


def test_the_playground_answers_with_route_and_sources(page: Any, server: tuple[str, Path]) -> None:
    url, _ = server
    log_in(page, url)
    page.fill("#question", REFUND_QUESTION)
    page.click("#ask")
    route = page.locator("#answer-route")
    route.wait_for()
    assert route.inner_text() == "rag"
    assert "refunds.md" in page.locator("#answer .sources").inner_text()
    assert "thirty days" in page.locator("#answer .text").inner_text()
    assert page.locator("#answer .reason").inner_text().startswith("Why: ")


@pytest.mark.parametrize(
    ("key", "message"),
    [("not-a-key", "Invalid admin key."), (CHAT, "This key may chat but not operate")],
)
def test_a_wrong_or_chat_key_is_refused(
    page: Any, server: tuple[str, Path], key: str, message: str
) -> None:
    url, _ = server
    log_in(page, url, key)
    assert message in page.locator("#login-error").inner_text()
    assert page.url == f"{url}/console/login"
    assert not [c for c in page.context.cookies() if c["name"] == "ragtune_console"]
    page.goto(f"{url}/console")
    assert page.url == f"{url}/console/login"


def test_a_post_without_the_csrf_token_is_refused(page: Any, server: tuple[str, Path]) -> None:
    url, _ = server
    log_in(page, url)
    page.wait_for_url(f"{url}/console")
    # The session cookie goes along (same browser context); the token does not.
    forged = page.request.post(f"{url}/console/adapters/titler/unload", form={"x": "1"})
    assert forged.status == 403
    wrong = page.request.post(
        f"{url}/console/adapters/titler/unload", headers={"x-csrf-token": "guessed"}
    )
    assert wrong.status == 403
    page.goto(f"{url}/console")
    assert page.locator("tr[data-adapter=titler] .residency").inner_text() == "loaded"


def test_a_script_in_a_document_name_and_text_is_shown_as_text(
    page: Any, server: tuple[str, Path]
) -> None:
    url, _ = server
    log_in(page, url)
    page.locator("tr[data-collection=default] button").click()
    sources = page.locator("#documents .source")
    sources.first.wait_for()
    assert f"/srv/docs/{HOSTILE}.md" in sources.all_inner_texts()
    page.fill("#question", "closing notes for the weekends")
    page.click("#ask")
    page.locator("#answer-route").wait_for()
    assert page.evaluate("window.pwned") is None
    assert "<script>" not in page.locator("#documents").inner_html()


def test_an_uploaded_document_is_ingested_and_its_name_stays_text(
    page: Any, server: tuple[str, Path]
) -> None:
    url, _ = server
    log_in(page, url)
    hostile_name = "notes <img src=x onerror=window.pwned=1>.md"
    page.fill("#upload input[name=collection]", "uploads")
    page.set_input_files(
        "#upload input[type=file]",
        files=[{
            "name": hostile_name, "mimeType": "text/markdown",
            "buffer": f"# Notes\n\nRefunds take ten days. {HOSTILE}\n".encode(),
        }],
    )  # fmt: skip
    page.click("#upload button[type=submit]")
    job = page.locator("#collections .job.completed")
    job.wait_for()  # the panel follows the job until it is done
    assert f"{hostile_name} (uploads): completed" in job.inner_text()
    assert page.locator("tr[data-collection=uploads] .chunks").inner_text() != "0"
    page.locator("tr[data-collection=uploads] button").click()
    page.locator("#documents .source").first.wait_for()
    assert page.evaluate("window.pwned") is None
    assert "<img" not in page.locator("#collections").inner_html()
