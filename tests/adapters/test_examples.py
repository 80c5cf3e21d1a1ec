"""Examples of a task: the training data reader, the example prompts reader, and which message
a conversation asks about (the rule the chat API and route evaluation share)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ragtune.adapters.errors import InvalidAdapterError, TrainingDataError
from ragtune.adapters.examples import Example, last_user_text, load_examples, read_prompts


@pytest.mark.parametrize(
    ("messages", "expected"),
    [
        ([("user", "Hi")], "Hi"),
        ([("system", "Brief."), ("user", "First"), ("assistant", "A"), ("user", "Then")], "Then"),
        # A trailing user turn without words is skipped, not taken.
        ([("user", "What is LoRA?"), ("assistant", "..."), ("user", "  \n")], "What is LoRA?"),
        ([("user", "Hi"), ("assistant", "Hello")], "Hi"),
        ([("system", "Only a system prompt")], ""),
        ([], ""),
    ],
)
def test_the_last_user_message_with_text(messages: list[tuple[str, str]], expected: str) -> None:
    assert last_user_text(messages) == expected


def test_training_data_formats_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(
        json.dumps({"instruction": "Title:", "input": "An abstract.", "output": "A title"})
        + "\n"
        + json.dumps(
            {
                "messages": [
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello"},
                ]
            }
        )
        + "\n"
    )
    examples = load_examples(data)
    assert [(e.prompt(), e.answer) for e in examples] == [
        ("Title: An abstract.", "A title"),
        ("Hi", "Hello"),
    ]
    data.write_text(data.read_text() + '{"input": "no output"}\n')
    with pytest.raises(TrainingDataError, match="line 3"):
        load_examples(data)


def test_examples_round_trip_through_the_held_out_format(tmp_path: Path) -> None:
    """`adapters train` saves the held-out split with `to_json`; `eval compare` reads it back."""
    examples = [
        Example([{"role": "system", "content": "Brief."}, {"role": "user", "content": "Q1"}], "A1"),
        Example([{"role": "user", "content": "Q2"}], "A2"),
    ]
    saved = tmp_path / "heldout.jsonl"
    saved.write_text("".join(e.to_json() + "\n" for e in examples))
    assert load_examples(saved) == examples


@pytest.mark.parametrize(
    "row",
    [
        {"messages": [{"role": "user", "content": "Hi"}]},  # no answer
        {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "A"}]},
        {"messages": [{"role": "system", "content": "S"}, {"role": "assistant", "content": "A"}]},
        {"output": "an answer to nothing"},
        ["not", "an", "object"],
    ],
)
def test_a_training_line_without_a_question_and_an_answer_is_named(
    tmp_path: Path, row: object
) -> None:
    data = tmp_path / "data.jsonl"
    good = json.dumps({"instruction": "Title:", "input": "x", "output": "y"})
    data.write_text(f"{good}\n{good}\n{json.dumps(row)}\n")
    with pytest.raises(TrainingDataError, match=r"data\.jsonl, line 3: expected"):
        load_examples(data)


def test_too_little_training_data_is_refused(tmp_path: Path) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"instruction": "Title:", "input": "x", "output": "y"}) + "\n")
    with pytest.raises(TrainingDataError, match="1 example"):
        load_examples(data)
    with pytest.raises(TrainingDataError, match="cannot read"):
        load_examples(tmp_path / "missing.jsonl")


def test_example_prompts_in_every_format(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    rows = [
        {"prompt": "P"},
        {"question": "Q"},
        {"instruction": "Title:", "input": "An abstract."},
        {"messages": [{"role": "user", "content": "First"}, {"role": "user", "content": "Last"}]},
        # OpenAI's content parts: the text parts count.
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "Parts"}]}]},
    ]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    assert read_prompts(prompts) == ["P", "Q", "Title: An abstract.", "Last", "Parts"]

    plain = tmp_path / "prompts.txt"
    plain.write_text("one prompt\n\nanother prompt\n")
    assert read_prompts(plain) == ["one prompt", "another prompt"]

    prompts.write_text('{"prompt": "P"}\n{"answer": "no prompt"}\n')
    with pytest.raises(InvalidAdapterError, match="line 2: no prompt"):
        read_prompts(prompts)


def test_task_files_with_a_byte_order_mark_or_another_encoding(tmp_path: Path) -> None:
    """As some Windows editors save UTF-8; a file in another encoding is a clear error."""
    good = json.dumps({"instruction": "Title:", "input": "x", "output": "y"})
    data = tmp_path / "data.jsonl"
    data.write_text(f"{good}\n{good}\n", encoding="utf-8-sig")
    assert [e.prompt() for e in load_examples(data)] == ["Title: x", "Title: x"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("First prompt\nSecond prompt\n", encoding="utf-8-sig")
    assert read_prompts(prompts) == ["First prompt", "Second prompt"]
    data.write_text(f"{good}\n{good}\n", encoding="utf-16")
    with pytest.raises(TrainingDataError, match="save it as UTF-8"):
        load_examples(data)
    prompts.write_text("Première\n", encoding="utf-16")
    with pytest.raises(InvalidAdapterError, match="save it as UTF-8"):
        read_prompts(prompts)
