"""BM25 over a collection's chunks (bm25s), persisted beside the store.

Single-node Chroma has no lexical search, so ragtune keeps a BM25 index per collection under
`DATA_DIR/lexical/`. It is derived data: every write to a collection stamps the collection with
a new revision (see `Collection`), and an index built at another revision is rebuilt from the
collection before it is used. A stale lexical index is therefore never searched, whoever wrote
to the store (this process, an interrupted run, another process on a Chroma server).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Container, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragtune.retrieval.settings import file_name_for
from ragtune.retrieval.store import Collection, Metadata, VectorStore

logger = logging.getLogger("ragtune.lexical")

FORMAT = 2
"""Bumped when what a saved index keeps changes: an index of another format is rebuilt (2: rows
keep `display_source`, which API filters match)."""
_SAVE_TRIES = 8
"""Times a save tries to move its index in (each time another save's moved in first)."""
_SAVING = ".lexical-"
"""How the folders a save writes in, and moves another save's index aside to, are named."""
_ABANDONED_SECONDS = 3600
"""A save's folder this old was left by a process that stopped mid-save."""


def _drop_abandoned(root: Path) -> None:
    """Remove the folders saves that stopped midway left in `root` (each a whole index)."""
    now = time.time()
    for folder in root.glob(_SAVING + "*"):
        with contextlib.suppress(OSError):
            if now - folder.stat().st_mtime > _ABANDONED_SECONDS:
                shutil.rmtree(folder, ignore_errors=True)


# Metadata kept beside the index, for filters and neighbour lookups without a store round trip.
ROW_KEYS = (
    "source",
    "display_source",
    "doc_id",
    "section",
    "title",
    "chunk_index",
    "page",
    "file_type",
)


CHAT_WORDS = frozenset({
    # courtesy and fillers
    "thanks", "thank", "thx", "sorry", "please", "pls", "ok", "okay", "hmm", "hm", "huh", "lol",
    "haha", "yes", "yeah", "yep", "nope", "hi", "hello", "hey", "great", "cool", "awesome", "wow",
    "oh", "ah", "sure", "alright", "got", "wait", "anyway", "btw", "also", "else", "still",
    "really", "lot", "bit", "kind", "sort", "stuff", "thing", "things",
    # modal verbs
    "could", "would", "might", "must", "shall", "may",
    # what is asked of the answer rather than what it is about
    "elaborate", "rephrase", "paraphrase", "clarify", "explain", "explanation", "summarize",
    "summarise", "summary", "example", "examples", "concrete", "detail", "details", "detailed",
    "short", "shorter", "simpler", "simple", "plain", "words", "step", "steps", "walkthrough",
    "walk", "screenshot", "screenshots", "snippet", "table", "list", "bullet", "bulleted",
    "checklist", "rewrite", "tl", "dr", "tldr", "eli5", "newbie", "beginner", "beginners",
    # contractions written without their apostrophe (the stop list has "don" and "t")
    "dont", "doesnt", "didnt", "isnt", "arent", "wasnt", "werent", "cant", "couldnt", "wont",
    "wouldnt", "shouldnt", "hasnt", "havent", "aint", "im", "ive", "youre", "youve", "weve",
    "theyre", "thats", "whats", "theres", "whos", "wheres",
})  # fmt: skip
"""Words a chat message uses whatever its topic: courtesy, fillers, modal verbs, and what is
asked of the answer (an example, shorter, step by step) rather than what it is about."""


@cache
def not_naming() -> list[str]:
    """The words `naming_words` leaves out: English stop words (NLTK's list, contractions' stems
    included) and `CHAT_WORDS`."""
    from bm25s.stopwords import STOPWORDS_EN_PLUS

    return sorted(frozenset(STOPWORDS_EN_PLUS) | CHAT_WORDS)


def _stemmer() -> Any:
    import Stemmer

    return Stemmer.Stemmer("english")


def naming_words(text: str, stemmer: Any) -> list[tuple[str, str]]:
    """The words of `text` that may name a topic, as (word as written, lower-cased; its stem),
    read as the index reads its chunks (the same tokenizer and stemmer): not `not_naming()`,
    and not words with a digit or an underscore (a number, a code, a name in code: details of a
    topic rather than one)."""
    (words,) = LexicalIndex._tokenize([text], None, not_naming())
    words = [word for word in words if word.isalpha()]
    return list(zip(words, stemmer.stemWords(words), strict=True))


def names_anything(text: str) -> bool:
    """Whether `text` has a word of two characters or more that is not a stop or chat word
    (`not_naming()`; numbers and codes count): "and?", "why not?", "Example?", "?" have none,
    and read alone they find whatever chunk is shortest ("Or,")."""
    (words,) = LexicalIndex._tokenize([text], None, not_naming())
    return bool(words)


def swapped_from(word: str, known: Container[str], stemmer: Any) -> bool:
    """Whether `word` (as written, lower-cased) reads as a word `known` holds (stemmed), or
    one that names no topic, with two adjacent letters swapped: the commonest slip of typing
    ("disabel", "taht"), which should not make a follow-up look like a topic of its own. Only
    for words of four letters or more, and only swaps: one letter left out, added or replaced
    also turns everyday words into document words ("dinner" -> "inner"; allowed in words of
    four to seven letters or more, it kept 2 to 12 of `bench/conversation.py`'s 50 lines of
    small talk from standing alone on the dev sets; swaps, none)."""
    if not 4 <= len(word) <= SWAP_LETTERS:
        return False
    plain = _whole_plain_words()
    for i in range(len(word) - 1):
        if word[i] == word[i + 1]:
            continue
        swapped = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
        if swapped in plain or stemmer.stemWord(swapped) in known:
            return True
    return False


SWAP_LETTERS = 24
"""`swapped_from` tries words of at most this many letters: the swaps of a word cost one stem
each, so a long one (a pasted sequence) would cost its length squared."""
SWAPS_TRIED = 64
"""`LexicalIndex.unknown_words` tries swaps for this many distinct unknown words of a message
at most; past that, a message names plenty that the documents lack anyway."""


@cache
def _whole_plain_words() -> frozenset[str]:
    """`not_naming()` without the stems the stop list keeps of contractions ("hadn", "doesn"):
    a swap landing on one ("hand" -> "hadn") is a real word, not a slip."""
    words = frozenset(not_naming())
    return frozenset(w for w in words if w + "'t" not in words and w + "t" not in words)


@dataclass(frozen=True)
class LexicalHit:
    row: int
    score: float


def row_metadata(metadata: Metadata) -> dict[str, Any]:
    keys = [k for k in str(metadata.get("meta_keys", "")).split(",") if k]
    return {k: metadata[k] for k in (*ROW_KEYS, *keys) if k in metadata}


def index_text(metadata: Metadata, text: str) -> str:
    """What BM25 reads of a chunk: its heading path and its text."""
    heading = str(metadata.get("heading", ""))
    return f"{heading}\n{text}" if heading else text


class LexicalIndex:
    """A BM25 index of one collection at one revision, with each chunk's id and metadata."""

    def __init__(
        self, revision: str, ids: list[str], rows: list[dict[str, Any]], bm25: Any | None
    ) -> None:
        self.revision = revision
        self.ids = ids
        self.rows = rows
        self._bm25 = bm25
        self._stemmer = _stemmer()
        self.row_of = {chunk_id: n for n, chunk_id in enumerate(ids)}
        self._positions: dict[tuple[str, int], int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def position(self, doc_id: str, chunk_index: int) -> int | None:
        """The row of a document's chunk by its index, if stored."""
        if self._positions is None:
            self._positions = {
                (str(r.get("doc_id")), int(r.get("chunk_index", -1))): n
                for n, r in enumerate(self.rows)
            }
        return self._positions.get((doc_id, chunk_index))

    @classmethod
    def build(cls, collection: Collection) -> LexicalIndex:
        import bm25s

        revision = collection.revision()
        ids: list[str] = []
        rows: list[dict[str, Any]] = []
        texts: list[str] = []
        for chunk in collection.scan(with_text=True):
            ids.append(chunk.id)
            rows.append(row_metadata(chunk.metadata))
            texts.append(index_text(chunk.metadata, chunk.text or ""))
        bm25 = None
        if texts:
            tokens = cls._tokenize(texts, _stemmer())
            bm25 = bm25s.BM25()
            bm25.index(tokens, show_progress=False)
        return cls(revision, ids, rows, bm25)

    @staticmethod
    def _tokenize(
        texts: Sequence[str], stemmer: Any, stopwords: str | list[str] = "en"
    ) -> list[list[str]]:
        import bm25s

        tokens: list[list[str]] = bm25s.tokenize(
            list(texts), stopwords=stopwords, stemmer=stemmer, return_ids=False, show_progress=False
        )
        return tokens

    def search(
        self, query: str, k: int, mask: npt.NDArray[np.bool_] | None = None
    ) -> list[LexicalHit]:
        """The `k` best rows with a positive BM25 score (among `mask`, when given)."""
        if self._bm25 is None or k < 1:
            return []
        tokens = self._tokenize([query], self._stemmer)[0]
        if not tokens:
            return []
        scores = self._bm25.get_scores(tokens)
        if mask is not None:
            scores = np.where(mask, scores, 0.0)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [LexicalHit(int(row), float(scores[row])) for row in top if scores[row] > 0]

    @cached_property
    def vocabulary(self) -> int:
        """How many distinct words the chunks use, as the index reads them (stemmed, the 33
        commonest English stop words left out), numbers, codes and names in code (which hold a
        digit or an underscore) not counted."""
        if self._bm25 is None:
            return 0
        return sum(1 for word in self._bm25.vocab_dict if word.isalpha())

    def unknown_words(self, text: str) -> frozenset[str]:
        """The words of `text` that name something (`naming_words`) and that no chunk uses,
        a known word with two letters swapped (`swapped_from`, for the first `SWAPS_TRIED`) not
        counted. Empty for an empty index, which tells nothing."""
        if self._bm25 is None:
            return frozenset()
        vocabulary = self._bm25.vocab_dict
        unknown = [
            (word, stem)
            for word, stem in dict.fromkeys(naming_words(text, self._stemmer))
            if stem not in vocabulary
        ]
        return frozenset(
            stem
            for n, (word, stem) in enumerate(unknown)
            if n >= SWAPS_TRIED or not swapped_from(word, vocabulary, self._stemmer)
        )

    def save(self, directory: Path) -> None:
        """Write atomically: readers read one save's index whole (every save is stamped, and
        `load` takes nothing read across two), or for a moment none, which they build. Saves
        of one index may run at once (two ingest jobs of a collection, two processes): each
        moves what it finds aside to a folder of its own, so none fails on another's (with
        one `.old` folder for all, a job failed with "Directory not empty"); the last one
        moved in stays, and a save that loses `_SAVE_TRIES` races in a row leaves the others'
        in place. Folders of saves a stopped process left are removed after an hour."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        _drop_abandoned(directory.parent)
        staging = Path(tempfile.mkdtemp(prefix=_SAVING, dir=directory.parent))
        aside: list[Path] = []
        try:
            if self._bm25 is not None:
                self._bm25.save(str(staging / "bm25"), show_progress=False)
            stamp = uuid.uuid4().hex
            state = {"format": FORMAT, "revision": self.revision, "save": stamp}
            rows = {"ids": self.ids, "rows": self.rows, "save": stamp}
            (staging / "rows.json").write_text(json.dumps(rows))
            (staging / "state.json").write_text(json.dumps(state))
            for tried in range(1, _SAVE_TRIES + 1):
                try:
                    os.replace(staging, directory)  # a folder replaces nothing or an empty one
                    break
                except OSError as exc:
                    if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise
                if tried == _SAVE_TRIES:  # the others' saves stand
                    logger.warning(
                        "lexical index of %s not saved: %d saves beside it", directory.name, tried
                    )
                    break
                aside.append(Path(tempfile.mkdtemp(prefix=_SAVING + "old-", dir=directory.parent)))
                with contextlib.suppress(FileNotFoundError):  # another save moved it first
                    os.replace(directory, aside[-1])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            for old in aside:
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, directory: Path) -> LexicalIndex | None:
        """The saved index, or None when there is none or it cannot be read."""
        import bm25s

        try:
            state = json.loads((directory / "state.json").read_text())
            if state.get("format") != FORMAT:
                return None
            data = json.loads((directory / "rows.json").read_text())
            bm25 = None
            if (directory / "bm25").is_dir():
                bm25 = bm25s.BM25.load(str(directory / "bm25"), mmap=False, show_progress=False)
            # Each file is read through the folder's name, which a save moves (`save`): read
            # across two saves, rows and scores of one beside the revision of another made a
            # search fail (a row past the ids) or search stale rows. Every save is stamped.
            again = json.loads((directory / "state.json").read_text())
        except (OSError, ValueError, KeyError):
            return None
        if not state.get("save") == data.get("save") == again.get("save"):
            return None
        return cls(str(state["revision"]), data["ids"], data["rows"], bm25)


class LexicalIndexes:
    """Where each collection's lexical index lives, and getting a current one."""

    @classmethod
    def for_store(cls, data_dir: Path, store: VectorStore) -> LexicalIndexes:
        return cls(data_dir / "lexical", store.location)

    def __init__(self, root: Path, store_location: str) -> None:
        # One folder per store: an embedded store and a Chroma server never share an index.
        key = hashlib.sha256(store_location.encode()).hexdigest()[:12]
        self.root = root / key

    def directory(self, collection_name: str) -> Path:
        return self.root / file_name_for(collection_name)

    def current(self, collection: Collection, save: bool = True) -> LexicalIndex:
        """The index of `collection` at its current revision, rebuilt (and saved) if stale."""
        directory = self.directory(collection.name)
        index = LexicalIndex.load(directory)
        if index is not None and index.revision == collection.revision():
            return index
        index = LexicalIndex.build(collection)
        if save:
            index.save(directory)
            self._drop_unshortened(collection.name)
        return index

    def drop(self, collection_name: str) -> None:
        shutil.rmtree(self.directory(collection_name), ignore_errors=True)
        self._drop_unshortened(collection_name)

    def _drop_unshortened(self, collection_name: str) -> None:
        """The folder a long name (129-255 characters) had before names were shortened
        (`file_name_for`): rebuilt under the short name, the old one was left on disk."""
        if self.directory(collection_name).name != collection_name:
            with contextlib.suppress(OSError):  # over the file system's 255: never written
                shutil.rmtree(self.root / collection_name)
