"""The plain-text conversion of an HTML developers' set (bench/evalsets/to_text.py): a page laid
out as a text browser dumps it, with what ragtune's HTML loader never reads left out."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.support.scripts import BENCH, load_script

CONVERTER = BENCH / "evalsets" / "to_text.py"

PAGE = """<!DOCTYPE html><html><head><title>Locking</title><style>p {}</style></head><body>
<!-- a comment --><nav><a href="/">Home</a></nav>
<h1>File Locking</h1>
<p>SQLite uses <b>POSIX advisory locks</b> on unix and <code>LockFileEx()</code> on Windows,
so that two processes never write the same database file at the same time, whatever
they are.</p>
<ul><li>SHARED</li><li>RESERVED lock, held by <i>one</i> writer</li></ul>
<pre>PRAGMA locking_mode=EXCLUSIVE;
  -- held until closed</pre>
<table><tr><th>Lock</th><th>Readers</th></tr><tr><td>SHARED</td><td>many</td></tr></table>
<dl><dt>PENDING</dt><dd>Waits for readers to finish.</dd></dl>
<svg><text>NATURAL LEFT JOIN</text></svg><form><input value="Search"></form>
</body></html>"""


@pytest.fixture(scope="module")
def converter() -> ModuleType:
    return load_script(CONVERTER)


def test_a_page_becomes_text_laid_out_as_a_text_browser_dumps_it(converter: ModuleType) -> None:
    assert converter.convert(PAGE) == (
        "File Locking\n\n"
        "SQLite uses POSIX advisory locks on unix and LockFileEx() on Windows, so\n"
        "that two processes never write the same database file at the same time,\n"
        "whatever they are.\n\n"
        "* SHARED\n\n"
        "* RESERVED lock, held by one writer\n\n"
        "    PRAGMA locking_mode=EXCLUSIVE;\n"
        "      -- held until closed\n\n"
        "Lock | Readers\n\n"
        "SHARED | many\n\n"
        "PENDING\n\n"
        "    Waits for readers to finish.\n"
    )


def test_the_set_keeps_its_questions_and_every_page(converter: ModuleType, tmp_path: Path) -> None:
    html_set = tmp_path / "html"
    (html_set / "corpus" / "sub").mkdir(parents=True)
    (html_set / "corpus" / "lock.html").write_text(PAGE)
    (html_set / "corpus" / "sub" / "faq.htm").write_text("<p>An answer.</p>")
    (html_set / "qa.json").write_text('[{"id": "q1"}]')
    out = converter.build(html_set, tmp_path / "text")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == [
        "corpus/lock.txt",
        "corpus/sub/faq.txt",
        "qa.json",
    ]
    assert (out / "corpus" / "sub" / "faq.txt").read_text() == "An answer.\n"
    assert (out / "qa.json").read_text() == '[{"id": "q1"}]'
