"""Chunks stay inside sections, carry their heading, and always fit the embedding model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from ragtune.ingest.chunking import (
    _MOST_PARAGRAPHS,
    Chunk,
    Chunker,
    gap_similarities,
    topic_groups,
)
from ragtune.ingest.loaders import LoadedDocument, Section, load_document
from ragtune.retrieval.embedder import Embedder
from tests.support.fakes import FakeEmbedder


def test_every_chunk_of_the_real_corpus_fits_the_model(
    eval_small: Path, real_embedder: Embedder
) -> None:
    chunker = Chunker(real_embedder)
    files = sorted((eval_small / "corpus").rglob("*.rst.txt"))
    texts = []
    for path in files:
        document = load_document(path, path.read_bytes())
        chunks = chunker.chunk(document)
        assert chunks, path
        headings = {" > ".join(s.path) for s in document.sections}
        for chunk in chunks:
            assert chunk.heading.startswith(document.title) or chunk.heading in headings
            texts.append(chunk.embed_text)
    texts += [c.embed_text for c in Chunker(real_embedder, embed_headings=True).chunk(document)]
    lengths = real_embedder.count_tokens(texts)
    assert max(lengths) <= real_embedder.max_tokens
    # Sections are long enough that most chunks use a good part of the model's input.
    assert sorted(lengths)[len(lengths) // 2] > 40


def test_a_run_the_model_reads_as_one_unknown_piece_is_cut_like_any_text(
    real_embedder: Embedder,
) -> None:
    """WordPiece reads a word of over 100 letters as one unknown piece: 20,000 letters without
    a space were one 20,000-character chunk, shown and put into prompts whole."""
    run = "".join(chr(ord("a") + n % 26) for n in range(20_000))
    assert real_embedder.count_tokens([run]) == [3]  # [CLS] [UNK] [SEP]
    document = LoadedDocument("Doc", "text", [Section(("Doc",), f"Before it. {run} After it.")])
    chunks = Chunker(real_embedder, overlap_tokens=0).chunk(document)
    assert max(len(c.text) for c in chunks) <= real_embedder.max_tokens * 12
    assert len(chunks) >= 20_000 // (real_embedder.max_tokens * 12)
    assert "".join(c.text.replace(" ", "") for c in chunks) == f"Beforeit.{run}Afterit."
    # Text as written is counted as before: a chunk of words holds as much as the model reads.
    words = " ".join(f"word{n}" for n in range(400))
    [first, *_] = Chunker(real_embedder).chunk(
        LoadedDocument("D", "text", [Section(("D",), words)])
    )
    assert real_embedder.count_tokens([first.text])[0] > real_embedder.max_tokens - 8


@pytest.mark.parametrize("kind", ["text", "markdown", "rst"])
def test_text_written_without_spaces_is_cut_after_a_sentence(
    real_embedder: Embedder, kind: str
) -> None:
    """Chinese and Japanese put no space after a sentence: a long paragraph was cut anywhere,
    mid-sentence ("…设置。工作线程处理"). Each chunk now ends with its sentence's mark."""
    ends = "。\uff01\uff1f"  # and fullwidth ! and ?
    sentences = [f"工作线程{n}处理队列中的任务并记录结果{ends[n % 3]}" for n in range(400)]
    document = LoadedDocument("Doc", kind, [Section(("Doc",), "".join(sentences))])
    chunks = Chunker(real_embedder, overlap_tokens=0).chunk(document)
    assert len(chunks) > 3
    assert all(chunk.text[-1] in ends for chunk in chunks)
    assert "".join(chunk.text for chunk in chunks) == "".join(sentences)


def test_a_paragraph_cut_at_a_sentence_end_keeps_the_stop_with_its_sentence() -> None:
    """A long paragraph is cut at sentence ends; the cut was before ". ", so a chunk ended
    without its stop and the next began with it (". The CAST operator ..."). Each chunk now
    ends with its sentence's stop and none starts with one."""
    sentences = [f"Sentence number {n} says what the operator does" for n in range(60)]
    text = ". ".join(sentences) + "."
    document = LoadedDocument("T", "html", [Section(("T",), text)])
    chunks = [
        c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
    ]
    assert len(chunks) > 3
    assert all(chunk.endswith("does.") for chunk in chunks)
    assert not any(chunk.startswith(".") for chunk in chunks)
    assert " ".join(chunks) == text


def test_each_distinct_piece_is_measured_once() -> None:
    """The splitter measures every piece two or three times, one tokenizer call each: text it
    cuts down to words (a megabyte without punctuation) took 46 s. Each distinct piece is now
    measured once, and the chunks are the same."""

    class Counting(FakeEmbedder):
        def __init__(self) -> None:
            super().__init__(max_tokens=40)
            self.measured: list[str] = []

        def count_tokens(self, texts: Sequence[str]) -> list[int]:
            self.measured.extend(texts)
            return super().count_tokens(texts)

    words = " ".join(f"w{n % 50}" for n in range(3000))  # no punctuation: cut down to words
    document = LoadedDocument("T", "markdown", [Section((), words)])
    counting = Counting()
    chunks = Chunker(counting, overlap_tokens=4).chunk(document)
    assert len(chunks) > 50
    assert len(counting.measured) < 2 * len(set(counting.measured))
    assert len(counting.measured) < 500
    assert all(counting.count_tokens([c.embed_text])[0] <= 40 for c in chunks)
    assert " ".join(c.text for c in chunks).count("w7 ") >= 60  # every word kept, some twice


def test_a_markdown_code_block_keeps_its_closing_fence() -> None:
    """The splitter cut before every fence line: a short block's closing fence went to the next
    chunk, which then opened a code block around the text after it. It cuts before a block's
    opening fence, and never between a closing fence and its block."""
    prose = " ".join(f"Sentence {n} explains the option." for n in range(6))
    blocks = [
        f"{prose}\n```python\nvalue_{n} = compute({n})\n```\nAfter block {n}." for n in range(8)
    ]
    document = LoadedDocument("Doc", "markdown", [Section(("Doc",), "\n".join(blocks))])
    fake = FakeEmbedder(max_tokens=60)
    chunks = Chunker(fake, overlap_tokens=0).chunk(document)
    assert len(chunks) > 3
    for chunk in chunks:
        fences = [line for line in chunk.text.split("\n") if line.startswith("```")]
        assert len(fences) % 2 == 0, chunk.text  # every block it holds is closed in it
        assert not chunk.text.startswith("```\n"), chunk.text
        assert "\x1d" not in chunk.text
        assert "\x1d" not in chunk.embed_text
        assert fake.count_tokens([chunk.embed_text])[0] <= 60
    assert "".join(c.text.replace("\n", "") for c in chunks) == "\n".join(blocks).replace("\n", "")


def test_chunks_never_cross_sections() -> None:
    fake = FakeEmbedder(max_tokens=40)
    document = LoadedDocument(
        "Doc",
        "text",
        [
            Section(("Doc", "A"), "alpha " * 50),
            Section(("Doc", "B"), "beta " * 10),
        ],
    )
    chunks = Chunker(fake, overlap_tokens=0).chunk(document)
    assert [c.section for c in chunks].count("B") == 1
    for chunk in chunks:
        words = set(chunk.text.split())
        assert words == ({"alpha"} if chunk.section == "A" else {"beta"})
        assert chunk.heading == f"Doc > {chunk.section}"
        assert fake.count_tokens([chunk.embed_text])[0] <= 40
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_text_without_any_separator_is_still_cut_to_fit() -> None:
    fake = FakeEmbedder(max_tokens=30)
    run_on = "-".join(f"w{i}" for i in range(200))  # one "line", no spaces
    document = LoadedDocument("T", "text", [Section((), run_on)])
    chunks = Chunker(fake, overlap_tokens=0).chunk(document)
    assert len(chunks) > 1
    assert all(fake.count_tokens([c.embed_text])[0] <= 30 for c in chunks)
    assert "".join(c.text for c in chunks).replace("-", "") == run_on.replace("-", "")


def test_headings_are_kept_and_embedded_only_when_asked() -> None:
    fake = FakeEmbedder(max_tokens=40)
    document = LoadedDocument("Guide", "text", [Section(("Guide", "Install"), "word " * 60)])
    plain = Chunker(fake).chunk(document)
    assert all(c.heading == "Guide > Install" and c.embed_text == c.text for c in plain)
    with_headings = Chunker(fake, embed_headings=True).chunk(document)
    assert all(c.embed_text == f"Guide > Install\n{c.text}" for c in with_headings)
    # the heading's tokens count against the model's limit
    assert all(fake.count_tokens([c.embed_text])[0] <= 40 for c in with_headings)


def test_a_run_of_blank_lines_is_a_break_no_chunk_spans() -> None:
    fake = FakeEmbedder(max_tokens=200)
    text = "first topic words here.\n\nstill first.\n\n\n\nsecond topic words.\n \n\nthird."
    document = LoadedDocument("T", "text", [Section((), text)])
    assert [c.text for c in Chunker(fake).chunk(document)] == [
        "first topic words here.\n\nstill first.",
        "second topic words.",
        "third.",
    ]
    merged = Chunker(fake, split_on_blank_lines=False).chunk(document)
    assert len(merged) == 1


def test_a_very_long_heading_keeps_its_innermost_part() -> None:
    fake = FakeEmbedder(max_tokens=40)
    path = tuple(f"level{n} words here" for n in range(10))
    document = LoadedDocument("Title", "text", [Section(path, "body text")])
    (chunk,) = Chunker(fake, embed_headings=True).chunk(document)
    heading = chunk.embed_text.split("\n")[0]
    assert heading.endswith("level9 words here")
    assert fake.count_tokens([heading])[0] <= 40 // 4 + 2
    # One heading of thousands of words: its longest beginning that fits.
    long = " ".join(f"word{n}" for n in range(8000))
    document = LoadedDocument("Title", "text", [Section((long,), "body text")])
    (chunk,) = Chunker(fake, embed_headings=True).chunk(document)
    heading = chunk.embed_text.split("\n")[0]
    assert heading == "word0 word1 word2 word3 word4 word5 word6 word7 word8 word9"


def _by_section(chunks: Sequence[Chunk]) -> dict[str, list[str]]:
    """The chunks' texts by their section path (below the title)."""
    found: dict[str, list[str]] = {}
    for chunk in chunks:
        found.setdefault(chunk.section, []).append(chunk.text)
    return found


def _api(*sections: Section) -> LoadedDocument:
    return LoadedDocument("API", "html", list(sections))


def test_a_small_subsection_with_none_of_its_own_is_read_with_its_section() -> None:
    fake = FakeEmbedder(max_tokens=100)
    document = _api(
        Section(("API", "f()"), "f doubles a number."),
        Section(("API", "f()", "Parameters"), "x\n\nthe number"),
        Section(("API", "f()", "Returns"), "twice x"),
        # too long to join
        Section(("API", "g()"), "g halves a number."),
        Section(("API", "g()", "Notes"), "note " * 60),
        Section(("API", "g()", "Returns"), "half x"),
        # small, but with a subsection of its own
        Section(("API", "h()"), "h squares a number."),
        Section(("API", "h()", "Usage"), "call it"),
        Section(("API", "h()", "Usage", "Errors"), "none at all"),
        # joined, the two would not fit
        Section(("API", "k()"), "k " * 80),
        Section(("API", "k()", "Returns"), "a number " * 10),
        # on another page
        Section(("API", "m()"), "m negates a number.", page=1),
        Section(("API", "m()", "Returns"), "minus x", page=2),
    )
    chunks = Chunker(fake, overlap_tokens=0).chunk(document)
    by_section = _by_section(chunks)
    assert by_section["f()"] == [
        "f doubles a number.\n\nParameters\nx\n\nthe number\n\nReturns\ntwice x"
    ]
    joined = {"f() > Parameters", "f() > Returns", "h() > Usage > Errors"}
    assert not joined & set(by_section)
    assert by_section["g()"] == ["g halves a number."]
    assert by_section["g() > Returns"] == ["half x"]
    assert by_section["h()"] == ["h squares a number."]
    # (its own subsection, a leaf, is read with it)
    assert by_section["h() > Usage"] == ["call it\n\nErrors\nnone at all"]
    assert by_section["k() > Returns"] == ["a number " * 9 + "a number"]
    assert by_section["m() > Returns"] == ["minus x"]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert all(fake.count_tokens([c.embed_text])[0] <= 100 for c in chunks)
    (f,) = Chunker(fake, embed_headings=True).chunk(document)[:1]
    assert f.embed_text == f"API > f()\n{f.text}"


def test_what_a_section_says_after_its_subsections_ends_its_own_chunk() -> None:
    """gtk-doc closes each function with "Since: 3.0" after its "Parameters" (a nested
    section): alone, a chunk of a few word pieces that answers nothing (a fifth of the GTK
    set's chunks). When small it ends the chunk the section's own text ended with, also when
    a subsection came between as chunks of its own; not when it does not fit there, is not
    small, is on another page, or is a section of its own (its heading starts it, or no
    subsection of it came before)."""
    fake = FakeEmbedder(max_tokens=100)
    document = _api(
        Section(("API", "f()"), "f doubles a number."),
        Section(("API", "f()", "Parameters"), "x | the number"),
        Section(("API", "f()"), "Since: 3.0", resumed=True),
        Section(("API", "g()"), "g halves a number."),
        Section(("API", "g()", "Notes"), "note " * 60),
        Section(("API", "g()"), "Since: 2.4", resumed=True),
        Section(("API", "k()"), "k " * 97),
        Section(("API", "k()", "Notes"), "note " * 60),
        Section(("API", "k()"), "Since: 2.6", resumed=True),
        Section(("API", "n()"), "n adds one."),
        Section(("API", "n()", "Notes"), "note " * 60),
        Section(("API", "n()"), "more " * 40, resumed=True),
        Section(("API", "m()"), "m negates a number.", page=1),
        Section(("API", "m()", "Notes"), "note " * 60, page=1),
        Section(("API", "m()"), "Since: 3.2", page=2, resumed=True),
        Section(("API", "p()"), "p one."),
        Section(("API", "p()"), "p two.", resumed=True),
        # a heading of the same title after a subsection starts a section of its own
        Section(("API", "t()"), "t one."),
        Section(("API", "t()", "Notes"), "note " * 60),
        Section(("API", "t()"), "t two."),
        # a small subsection after the resumed text joins the same chunk
        Section(("API", "q()"), "q triples a number."),
        Section(("API", "q()", "Notes"), "note " * 60),
        Section(("API", "q()"), "Since: 3.4", resumed=True),
        Section(("API", "q()", "Returns"), "thrice x"),
        # a section whose subsection came back after another section was read: its own
        # chunk is no longer the one before
        Section(("API", "r()"), "r example."),
        Section(("API", "r()", "Out"), "out " * 60),
        Section(("API", "s()"), "s text."),
        Section(("API", "r()", "Out"), "out " * 60),
        Section(("API", "r()"), "See above.", resumed=True),
    )
    chunks = Chunker(fake, overlap_tokens=0).chunk(document)
    by_section = _by_section(chunks)
    assert by_section["f()"] == ["f doubles a number.\n\nParameters\nx | the number\n\nSince: 3.0"]
    assert by_section["g()"] == ["g halves a number.\n\nSince: 2.4"]
    assert by_section["g() > Notes"] == [("note " * 60).strip()]
    assert by_section["k()"] == [("k " * 97).strip(), "Since: 2.6"]
    assert by_section["n()"] == ["n adds one.", ("more " * 40).strip()]
    assert by_section["m()"] == ["m negates a number.", "Since: 3.2"]
    assert by_section["p()"] == ["p one.", "p two."]
    assert by_section["q()"] == ["q triples a number.\n\nSince: 3.4\n\nReturns\nthrice x"]
    assert by_section["r()"] == ["r example.", "See above."]
    assert by_section["t()"] == ["t one.", "t two."]
    assert [c.index for c in chunks] == list(range(len(chunks)))
    # As gtk-doc writes it: the function's text, its parameters and its version one chunk.
    page = (
        "<html><body><div class='refsect2'><h3>f ()</h3><p>f doubles a number.</p>"
        "<div class='refsect3'><h4>Parameters</h4><table><tr><td><p>x</p></td>"
        "<td><p>the number</p></td></tr></table></div><p class='since'>Since: 3.0</p></div>"
        "<div class='refsect2'><h3>g ()</h3><p>g halves a number.</p></div></body></html>"
    )
    assert _html_chunks("f.html", page) == [
        "f doubles a number.\n\nParameters\nx | the number\n\nSince: 3.0",
        "g halves a number.",
    ]


def _html_chunks(name: str, page: str) -> list[str]:
    """The chunks' texts of an HTML page, each block small enough to be a chunk of its own."""
    document = load_document(Path(name), page.encode())
    return [c.text for c in Chunker(FakeEmbedder(max_tokens=200), overlap_tokens=0).chunk(document)]


def test_self_contained_html_blocks_are_chunked_apart() -> None:
    """An FAQ whose questions were cut (or never were headings): answers in blockquotes, and
    descriptions with no term before them (a definition list whose terms were the questions),
    each stay whole and alone, however short; paragraphs of plain flow still share a chunk,
    and so do a list's entries that keep their terms. A chunk that ran from one answer into
    the next matched neither."""
    page = (
        "<html><body><h1>FAQ</h1>"
        "<blockquote><p>Short answer: an INTEGER PRIMARY KEY.</p><p>Longer: see rowid.</p>"
        "</blockquote><blockquote><p>SQLite uses dynamic typing.</p></blockquote>"
        "<p>Plain one.</p><p>Plain two.</p>"
        "<dl><dd><p>Commit with --amend.</p></dd><dd>Stash first.</dd></dl>"
        "<dl><dt>--amend</dt><dd><p>Replace the tip of the branch.</p></dd>"
        "<dt>--quiet</dt><dd>Say less.</dd></dl></body></html>"
    )
    assert _html_chunks("faq.html", page) == [
        "Short answer: an INTEGER PRIMARY KEY.\n\nLonger: see rowid.",
        "SQLite uses dynamic typing.",
        "Plain one.\n\nPlain two.",
        "Commit with --amend.",
        "Stash first.",
        "--amend\n\nReplace the tip of the branch.\n\n--quiet\n\nSay less.",
    ]


def test_a_label_is_read_with_the_block_it_introduces() -> None:
    """SQLite's compile-time options: each name a bold line, its description the blockquote
    after it. Read apart, 214 of that set's 2,314 chunks held two words or fewer ("Or,",
    "HAVE_USLEEP"), and a description's chunk did not say what it described. A block of a few
    words that ends no sentence (a name, a signature, "Or,") now goes with the block after it;
    a short answer that is a sentence still stands alone, and so does a label nothing follows."""
    page = (
        "<html><body><h1>Compile-time Options</h1>"
        "<p><b>HAVE_USLEEP</b></p><blockquote><p>The unix VFS uses usleep() to sleep.</p>"
        "</blockquote>"
        "<p><b>SQLITE_DEFAULT_CACHE_SIZE=<i>&lt;N&gt;</i></b></p>"
        "<blockquote><p>The suggested cache size.</p></blockquote>"
        "<blockquote><pre>int sqlite3_step(sqlite3_stmt*);</pre></blockquote>"
        "<p>Or,</p><blockquote><p>Evaluate the statement again.</p></blockquote>"
        "<blockquote><p>SQLite uses dynamic typing.</p></blockquote>"
        "<blockquote><p>See also</p></blockquote></body></html>"
    )
    assert _html_chunks("compile.html", page) == [
        "HAVE_USLEEP\n\nThe unix VFS uses usleep() to sleep.",
        "SQLITE_DEFAULT_CACHE_SIZE=<N>\n\nThe suggested cache size.",
        "int sqlite3_step(sqlite3_stmt*);\n\nOr,\n\nEvaluate the statement again.",
        "SQLite uses dynamic typing.",
        "See also",
    ]
    # A label and the long block it introduces: the label starts that block's first chunk.
    long = " ".join(f"Sentence {n} of the description." for n in range(60))
    document = LoadedDocument("T", "text", [Section(("T",), f"OPTION_NAME\n\n\n{long}")])
    chunks = Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
    assert len(chunks) > 2
    assert chunks[0].text.startswith("OPTION_NAME\n\nSentence 0 of")


def test_a_few_words_leading_into_a_long_piece_are_cut_with_it() -> None:
    """Inside a block, LangChain's splitter made a chunk of whatever came before a piece too
    long for one chunk: reStructuredText's `.. code-block:: none` before a long listing, "it
    prints something like:" at the end of one, each a chunk of a few words (14 in the Python
    set). They lead into what follows and now start its chunk; a sentence stays where it is."""
    listing = "\n".join(f"    $ step {n} runs here" for n in range(30))
    text = (
        "Run the tool as shown:\n\n.. code-block:: none\n\n" + listing + "\n\n"
        "When the script runs it prints something like:\n\n.. code-block:: none\n\n"
        "    done 1\n    done 2\n\nThat is all it prints."
    )
    document = LoadedDocument("T", "rst", [Section(("T",), text)])
    chunks = [
        c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
    ]
    assert chunks[0].startswith("Run the tool as shown:\n\n.. code-block:: none\n\n    $ step 0")
    assert chunks[-1] == (
        "When the script runs it prints something like:\n\n.. code-block:: none\n\n"
        "    done 1\n    done 2\n\nThat is all it prints."
    )
    assert "\n".join(chunks).count("$ step") == 30  # nothing lost, nothing twice
    # A sentence before the long piece is not carried with it.
    text = "Run the tool as shown.\n\n.. code-block:: none\n\n" + listing
    document = LoadedDocument("T", "rst", [Section(("T",), text)])
    chunks = [
        c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
    ]
    assert chunks[0] == "Run the tool as shown."
    assert chunks[1].startswith(".. code-block:: none\n\n    $ step 0")
    # What is carried starts the chunk whole, even where the long piece is cut at sentence
    # ends or words: "e.g." and ".." are not places to cut it.
    words = " ".join(f"w{n}" for n in range(80))
    for kind, text in [
        ("rst", f"Intro.\n\n.. code-block:: none\n\n   {words}"),
        ("html", f"Some intro sentence here.\n\nThe options, e.g. these:\n\n{words}"),
    ]:
        document = LoadedDocument("T", kind, [Section(("T",), text)])
        chunks = [
            c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
        ]
        assert chunks[0] in ("Intro.", "Some intro sentence here.")
        assert chunks[1].startswith(
            (".. code-block:: none\n\n   w0 ", "The options, e.g. these:\n\nw0 ")
        )
    # The last lines of a listing introduce nothing: they stay out of the next listing.
    first = "\n".join(f"    a{n} = f(a{n - 1})" for n in range(20))
    second = "\n".join(f"    b{n} = g(b{n - 1})" for n in range(25))
    text = f".. code-block:: python\n\n{first}\n\n.. code-block:: python\n\n{second}"
    document = LoadedDocument("T", "rst", [Section(("T",), text)])
    chunks = [
        c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
    ]
    assert [c for c in chunks if "a19" in c and "b0" in c] == []
    assert any(c.startswith(".. code-block:: python\n\n    b0 = g(b-1)") for c in chunks)


def test_a_named_anchor_before_a_block_starts_an_entry() -> None:
    """makeinfo (Texinfo 6) writes a page flat: each heading after an empty `<a name>`, beside
    its paragraphs. With an FAQ's question headings cut (or a question written as a bold
    line, as SQLite's FAQ does), that anchor is all that says where an answer ends. An anchor
    inside a sentence, a link, or an anchor with text is no such mark."""
    page = (
        "<html><body><h1>FFmpeg FAQ</h1><div class='container'>"
        "<h2>1 Usage<span class='pull-right'><a href='#Usage' aria-hidden='true'>#</a> "
        "<a href='#toc-Usage' aria-hidden='true'>TOC</a></span></h2>"
        "<a name='Join'></a>\n<p>Use the concat demuxer.</p><p>Or the concat filter.</p>"
        "<a name='Stdin'></a><p>Name the file <code>-</code>.</p>"
        "<p>A <a name='inline'></a>mark mid-sentence, <a href='#Join'>a link</a> and "
        "<a id='named'>a named phrase</a> stay in place.</p>"
        "<a id='Symbols'></a><ul><li>Build the _g binaries.</li></ul>"
        "<a name='Colors'></a><h3>1.1 Colors</h3><p>See the color syntax.</p>"
        "</div></body></html>"
    )
    document = load_document(Path("faq.html"), page.encode())
    assert [s.path for s in document.sections] == [
        ("FFmpeg FAQ", "1 Usage"),
        ("FFmpeg FAQ", "1 Usage", "1.1 Colors"),
    ]
    assert _html_chunks("faq.html", page) == [
        "Use the concat demuxer.\n\nOr the concat filter.",
        "Name the file -.\n\nA mark mid-sentence, a link and a named phrase stay in place.",
        # A subsection this small is read with its section (see the chunker).
        "Build the _g binaries.\n\n1.1 Colors\nSee the color syntax.",
    ]


def test_a_reference_of_short_options_is_not_a_chunk_per_option() -> None:
    """A reference lists each option as a term and its description: read as units, every
    option was a chunk of a few words ("auto", "Auto pick the format."), and FFmpeg's filters
    page came out in thousands of them. A term's entries now share chunks up to the budget,
    and with the chunker's overlap a description cut from its term still starts with it."""
    options = "".join(
        f"<dt>opt{n}</dt><dd><p>Set the {n} value of the filter, from 0 to {n}0.</p></dd>"
        for n in range(12)
    )
    page = f"<html><body><h1>afir</h1><p>The filter accepts these options:</p><dl>{options}</dl>"
    document = load_document(Path("filters.html"), page.encode())
    chunks = [
        c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=4).chunk(document)
    ]
    assert 2 <= len(chunks) <= 4  # twelve options of ten words, about fifty words a chunk
    assert chunks[0].startswith("The filter accepts these options:\n\nopt0\n\nSet the 0 value")
    for chunk in chunks:
        for n in range(12):
            if f"Set the {n} value" in chunk:
                assert f"opt{n}\n\nSet the {n} value" in chunk


def test_sections_written_as_divs_stand_on_their_own() -> None:
    """Generators older than HTML5's `section` mark a section with a div's class: docutils'
    HTML4 writer and DocBook XSL (`section`, `sect1`), Texinfo (`section-level-extent`). With
    an FAQ's question headings cut, that div is all that says where an answer ends; a layout
    div (a wrapper, a note box) is still only a block, and a class that merely contains
    "section" is no section."""
    page = (
        "<html><body><h1>FAQ</h1><div class='body'>"
        "<div class='section' id='q1'><p>Use the -m option.</p></div>"
        "<div class='section' id='q2'><p>Run the tests first.</p>"
        "<div class='admonition note'><p>Slow on CI.</p></div><p>Then push.</p></div>"
        "<div class='sect1'><div class='titlepage'></div><p>Rebase, do not merge.</p></div>"
        "<div class='section-level-extent'><p>Info manuals nest nodes.</p></div>"
        "<div class='subsections'><p>Not one.</p></div><p>Nor this.</p>"
        "</div></body></html>"
    )
    assert _html_chunks("faq.html", page) == [
        "Use the -m option.",
        "Run the tests first.\n\nSlow on CI.\n\nThen push.",
        "Rebase, do not merge.",
        "Info manuals nest nodes.",
        "Not one.\n\nNor this.",
    ]


def test_terms_sharing_a_description_stay_with_it() -> None:
    """A definition list's entry is its terms and then their description, as HTML defines the
    group: Git's "-d" and "--delete" name one description. Before, each term after the first
    was a chunk of its own word, and the description lost the name it is looked up by."""
    page = (
        "<html><body><h1>Options</h1>"
        "<dl><dt>-d</dt>\n<dt>--delete</dt><dd><p>Delete a branch.</p></dd>"
        "<dt>-D</dt><dd>Shortcut for --delete --force.</dd>"
        "<dt>-q</dt>Quiet.</dl></body></html>"
    )
    assert _html_chunks("options.html", page) == [
        "-d\n\n--delete\n\nDelete a branch.\n\n-D\n\nShortcut for --delete --force.\n\n-q\n\nQuiet."
    ]


def test_question_and_answer_rows_are_entries() -> None:
    """DocBook XSL renders a question-and-answer set as a table of `tr.question` and
    `tr.answer` rows: a question stays with its answer, and answers whose questions were cut
    stay apart, as a definition list's entries do; other rows of a table share chunks."""
    page = (
        "<html><body><h1>Common Questions</h1><div class='qandaset'><table>"
        "<tr class='qandadiv'><td colspan='2'><h5>1. General</h5></td></tr>"
        "<tr class='question'><td>1.1.</td><td><p>How do I get started?</p></td></tr>"
        "<tr class='answer'><td></td><td><p>Read the getting started guide.</p></td></tr>"
        "<tr class='answer'><td></td><td><p>Use a GtkTreeView for lists.</p></td></tr>"
        "<tr class='answer'><td></td><td><p>Use a GtkTextView for text.</p></td></tr>"
        "</table></div><table><tr><td>GtkLabel</td><td>text</td></tr>"
        "<tr><td>GtkImage</td><td>pictures</td></tr></table></body></html>"
    )
    assert _html_chunks("questions.html", page) == [
        "1.1.\n\nHow do I get started?\n\nRead the getting started guide.",
        "Use a GtkTreeView for lists.",
        "Use a GtkTextView for text.",
        "GtkLabel | text\nGtkImage | pictures",  # a row a line, as .docx tables are read
    ]


# Three answers of an FAQ whose questions were left out, as plain text: nothing but blank lines
# between paragraphs, and the answers' own words.
_LOCKING = [
    "Multiple processes can open the same database file at once.",
    "Only one process can write to the database file at one time; the file is locked.",
    "Readers wait while the writer holds the lock on the database file.",
]
_TYPES = [
    "Columns use dynamic typing: a value carries its own type, not its column.",
    "A column's declared type is an affinity, a type its values prefer.",
]
_THREADS = [
    "Threads are evil; use them with great care if you use them at all.",
    "The library is threadsafe when compiled with the threadsafe option, and threads may share it.",
]


def test_plain_text_is_cut_between_topics_not_where_the_budget_runs_out() -> None:
    """Packed in order up to the budget, the locking answer's last paragraph went with the
    typing answer and the typing answer with the threads one: chunks that run from one answer
    into the next, matched by neither's question. Grouped by topic, each chunk is one answer."""
    text = "\n\n".join(_LOCKING + _TYPES + _THREADS)
    fake = FakeEmbedder(max_tokens=200)
    words = fake.content_tokens
    # Room for the locking answer and the typing answer's first paragraph, not for both
    # typing and threads answers.
    budget = words("\n\n".join([*_LOCKING, _TYPES[0]]))
    assert words("\n\n".join(_TYPES + _THREADS)) > budget
    fake.max_tokens = budget + fake.special_tokens
    document = LoadedDocument("faq", "text", [Section((), text)])
    chunks = Chunker(fake, overlap_tokens=0).chunk(document)
    assert [c.text for c in chunks] == [
        "\n\n".join(_LOCKING), "\n\n".join(_TYPES), "\n\n".join(_THREADS),
    ]  # fmt: skip
    assert all(fake.count_tokens([c.embed_text])[0] <= fake.max_tokens for c in chunks)
    # Other formats mark their topics themselves (headings, blocks): packed in order, the
    # same text ran from one answer into the next.
    packed = Chunker(fake, overlap_tokens=0).chunk(
        LoadedDocument("faq", "markdown", [Section((), text)])
    )
    assert packed[0].text == "\n\n".join([*_LOCKING, _TYPES[0]])


def test_topic_groups_fit_the_budget_and_keep_every_paragraph() -> None:
    fake = FakeEmbedder()
    paragraphs = _LOCKING + _TYPES + _THREADS
    text = "\n\n".join(paragraphs)
    for budget in (12, 25, 40, 60):
        groups = topic_groups(text, fake, budget)
        assert "\n\n".join(groups) == text
        # Each group fits, or is one paragraph too long to (the splitter cuts it).
        assert all(fake.content_tokens(g) <= budget or g in paragraphs for g in groups)
        assert len(groups) > 1
    assert topic_groups(text, fake, 1000) == [text]  # it all fits: one group
    # Very many short paragraphs: groups of a bounded number of them, nothing lost.
    lines = "\n\n".join(f"item{n}" for n in range(300))
    groups = topic_groups(lines, fake, 280)
    assert "\n\n".join(groups) == lines
    assert max(g.count("item") for g in groups) <= _MOST_PARAGRAPHS
    assert len(groups) == 3  # the fewest groups that bound allows
    # A paragraph longer than the budget is a group of its own, for the splitter to cut.
    long = "word " * 50
    assert topic_groups(f"{long}\n\nshort one\n\nshort two", fake, 20) == [
        long, "short one\n\nshort two",
    ]  # fmt: skip


def test_paragraphs_sharing_words_are_more_alike_across_their_gap() -> None:
    similarities = gap_similarities(_LOCKING + _TYPES, window=2)
    assert len(similarities) == 4
    between_answers = similarities[2]
    assert between_answers < min(similarities[:2])
    assert gap_similarities(["one", "!!!"], window=2) == [0.0]


def test_a_long_tables_header_starts_each_of_its_chunks() -> None:
    """A table too long for one chunk was cut between rows, its header in the first chunk
    only: the rest were rows whose columns nobody could tell (25 chunks of the Python set).
    Every chunk of it now starts with the header's rows (its borders only in the first); a
    table that fits one chunk, and a table without a header, are cut as before."""
    rows = [f"item{n} | value {n} and more" for n in range(30)]
    grid_rule = "\n+------+---------+\n"
    cases = [
        # (kind, the table's lines through its header, its rows, the header's rows)
        (
            "markdown",
            "| Name | Meaning |\n| --- | :-: |",
            "\n".join(f"| {r} |" for r in rows),
            "| Name | Meaning |",
        ),
        (
            "rst",
            "+------+---------+\n| Name | Meaning |\n+======+=========+",
            grid_rule.join(f"| {r} |" for r in rows) + grid_rule.rstrip(),
            "| Name | Meaning |",
        ),
        (
            "rst",
            "====  =======\nName  Meaning\n====  =======",
            "\n".join(r.replace(" |", "") for r in rows) + "\n====  =======",
            "Name  Meaning",
        ),
        # The HTML loader's delimiter row under a row of `th` cells, after the table's caption.
        ("html", "Limits\nName | Meaning\n--- | ---", "\n".join(rows), "Name | Meaning"),
        # Two header rows (a column's name over its subcolumns').
        (
            "html",
            "Name | Meaning\nfirst | last\n--- | ---",
            "\n".join(rows),
            "Name | Meaning\nfirst | last",
        ),
    ]
    for kind, top, body, head in cases:
        text = f"A table follows.\n\n{top}\n{body}\n\nAfter it."
        document = LoadedDocument("T", kind, [Section(("T",), text)])
        chunks = [
            c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
        ]
        assert chunks[0] == "A table follows.", kind
        assert chunks[-1] == "After it.", kind
        parts = chunks[1:-1]
        assert len(parts) > 2, kind
        assert parts[0].startswith(top + "\n"), kind
        for part in parts[1:]:
            assert part.startswith(head + "\n"), (kind, part)
            assert "item" in part.removeprefix(head), (kind, part)
        assert sum(p.count("item") for p in parts) == 30, kind  # nothing lost or twice
        # The same table short enough for one chunk is left as it is.
        short = top + "\n" + "\n".join(body.split("\n")[:3])
        document = LoadedDocument("T", kind, [Section(("T",), short)])
        assert [c.text for c in Chunker(FakeEmbedder(max_tokens=60)).chunk(document)] == [short]
    # A top too long to keep its rules (a long caption here: the fake model counts words
    # only) keeps its caption and header in the first chunk, its delimiter row left out.
    caption = "Table three lists the limits of every engine the server supports by default"
    text = f"{caption}\n| Name | Meaning |\n| --- | --- |\n" + "\n".join(f"| {r} |" for r in rows)
    document = LoadedDocument("T", "markdown", [Section(("T",), text)])
    chunks = [
        c.text for c in Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0).chunk(document)
    ]
    assert chunks[0].startswith(f"{caption}\n| Name | Meaning |\n| item0 |")
    assert all(c.startswith("| Name | Meaning |\n| item") for c in chunks[1:])
    assert sum(c.count("item") for c in chunks) == 30
    # A simple table without a header (its second border is its last line), and rows with no
    # delimiter row under their first: no header is repeated.
    for kind, table in [
        (
            "rst",
            "====  =======\n" + "\n".join(r.replace(" |", "") for r in rows) + "\n====  =======",
        ),
        ("html", "\n".join(rows)),
    ]:
        document = LoadedDocument("T", kind, [Section(("T",), table)])
        chunker = Chunker(FakeEmbedder(max_tokens=60), overlap_tokens=0)
        chunks = [c.text for c in chunker.chunk(document)]
        assert sum(c.count("item") for c in chunks) == 30, kind
        assert all(c.startswith("item") for c in chunks[1:]), kind
