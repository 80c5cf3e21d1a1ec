#!/usr/bin/env python3
"""Print an HTML developers' set to PDF: the same questions, answers and relevance rule over the
same documents, as the PDFs an organisation would hand ragtune (a browser's "Save as PDF").

    .venv/bin/python bench/evalsets/print_pdf.py HTML_SET_DIR OUT_DIR

Each HTML page of HTML_SET_DIR/corpus is printed by headless Chromium (Debian's `chromium`)
with a document outline (bookmarks) made from its headings, as word processors and LaTeX's
hyperref write them; qa.json is copied as it is. Nothing is fetched: the pages are local files
and Chromium runs without network. Answer passages stay findable (the relevance rule compares
words, not layout), so retrieval on OUT_DIR measures what PDF reading loses or keeps.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-pdf-header-footer",
    "--generate-pdf-document-outline",
    "--proxy-server=127.0.0.1:9",  # nothing leaves the machine
)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("print_pdf: no Chromium found; install Debian's `chromium` package")


def print_page(browser: str, page: Path, out: Path) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--print-to-pdf={out}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    if not out.is_file():
        raise RuntimeError(f"Chromium wrote no PDF for {page}")


def build(html_set: Path, out: Path, workers: int = 2) -> Path:
    """OUT_DIR/corpus/*.pdf (one per page, same relative paths) and OUT_DIR/qa.json."""
    browser = chromium()
    return build_converted(html_set, out, ".pdf", lambda page, to: print_page(browser, page, to))


def build_converted(
    html_set: Path,
    out: Path,
    suffix: str,
    convert: Callable[[Path, Path], None],
    workers: int = 2,
) -> Path:
    """OUT_DIR/corpus/<page><suffix> for each HTML page of HTML_SET_DIR/corpus, written by
    `convert(page, target)` (`workers` at a time), and qa.json as it is; written to a staging
    folder first, so an interrupted build is never taken for a finished one."""
    if (out / "qa.json").is_file():
        return out
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pages = sorted((html_set / "corpus").rglob("*.htm*"))
    targets = [
        staging / "corpus" / page.relative_to(html_set / "corpus").with_suffix(suffix)
        for page in pages
    ]
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda job: convert(*job), zip(pages, targets, strict=True)))
    shutil.copyfile(html_set / "qa.json", staging / "qa.json")
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def command_line(build: Callable[[Path, Path], Path], description: str | None) -> None:
    """A conversion script's command line: HTML_SET_DIR OUT_DIR, then `build` them."""
    parser = argparse.ArgumentParser(description=(description or "").split("\n", maxsplit=1)[0])
    parser.add_argument("html_set", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    build(args.html_set, args.out)


def main() -> None:
    command_line(build, __doc__)


if __name__ == "__main__":
    main()
