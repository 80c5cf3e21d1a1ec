"""Examples of a task as users write them: training data (`adapters train`, `eval compare`),
example prompts (`adapters add --examples`), and the one rule for which message a request is
about, shared with the chat API and route evaluation (serving and evals import it from here)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ragtune.adapters.errors import InvalidAdapterError, TrainingDataError

TRAINING_FORMAT = (
    '{"instruction", "input", "output"} or {"messages": [...]} with a user message and ending '
    "with an assistant message"
)


def last_user_text(messages: Iterable[tuple[str, str]]) -> str:
    """The text a conversation asks about: the last user message with text, given as
    (role, text) pairs; "" when there is none.

    A user turn without text (an empty follow-up, an image alone) is skipped rather than
    taken: retrieval, the router and an adapter's task profile need words to work on.
    """
    texts = [text for role, text in messages if role == "user" and text.strip()]
    return texts[-1] if texts else ""


@dataclass(frozen=True)
class Example:
    """One example of a task: the conversation up to the answer, and the answer."""

    messages: list[dict[str, str]]
    """The conversation up to the answer (OpenAI roles; at least one user message with text)."""
    answer: str

    def prompt(self) -> str:
        """What the example asks (see `last_user_text`)."""
        return last_user_text((m["role"], m["content"]) for m in self.messages)

    def to_json(self) -> str:
        """The example as a line of the `messages` format `load_examples` reads."""
        return json.dumps(
            {"messages": [*self.messages, {"role": "assistant", "content": self.answer}]}
        )


def load_examples(path: Path) -> list[Example]:
    """A task's examples, JSONL: {"instruction", "input", "output"} or {"messages": [..., an
    assistant message]} per line. The first bad line is an error that names it."""
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # a byte-order mark read past
    except (OSError, UnicodeDecodeError) as exc:
        raise TrainingDataError(
            f"cannot read the training data {path}: {exc} (save it as UTF-8)"
        ) from exc
    examples = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TrainingDataError(f"{path}, line {number}: not JSON ({exc})") from exc
        example = _example(row)
        if example is None:
            raise TrainingDataError(f"{path}, line {number}: expected {TRAINING_FORMAT}")
        examples.append(example)
    if len(examples) < 2:
        raise TrainingDataError(f"{path} has {len(examples)} example(s); training needs more")
    return examples


def _example(row: Any) -> Example | None:
    if not isinstance(row, dict):
        return None
    if isinstance(row.get("messages"), list):
        messages = [
            {"role": str(m.get("role")), "content": content_text(m.get("content"))}
            for m in row["messages"]
            if isinstance(m, dict)
        ]
        if len(messages) < 2 or messages[-1]["role"] != "assistant":
            return None
        example = Example(messages[:-1], messages[-1]["content"])
        return example if example.prompt() else None
    if isinstance(row.get("output"), str) and (row.get("instruction") or row.get("input")):
        prompt = " ".join(str(row[k]).strip() for k in ("instruction", "input") if row.get(k))
        return Example([{"role": "user", "content": prompt}], row["output"])
    return None


def read_prompts(path: Path) -> list[str]:
    """Example prompts of a task (what `adapters add --examples` registers): JSONL with
    `prompt`, `question`, `instruction` + `input` or `messages` per line, or plain text, one
    prompt per line."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark read past
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidAdapterError(
            f"cannot read the examples file {path}: {exc} (save it as UTF-8)"
        ) from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    prompts = []
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InvalidAdapterError(f"{path}, line {number}: not JSON ({exc})") from exc
        text = _prompt(row)
        if not text.strip():
            raise InvalidAdapterError(
                f"{path}, line {number}: no prompt (give prompt, question, instruction/input "
                "or messages)"
            )
        prompts.append(text.strip())
    return prompts


def _prompt(row: Any) -> str:
    if not isinstance(row, dict):
        return ""
    if isinstance(row.get("messages"), list):
        return last_user_text(
            (str(m.get("role")), content_text(m.get("content")))
            for m in row["messages"]
            if isinstance(m, dict)
        )
    given = row.get("prompt") or row.get("question")
    if given:
        return str(given)
    return " ".join(str(row[k]) for k in ("instruction", "input") if row.get(k))


def content_text(content: Any) -> str:
    """A message's text: the string, or the text parts of OpenAI's list of content parts."""
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return "" if content is None else str(content)
