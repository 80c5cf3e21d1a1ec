"""What the model receives from a RAG prompt, measured on the token ids of its own chat template:
the special tokens inside the context block, and the context tags a reader would see."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Any

from ragtune.serving.prompting import RAG_INSTRUCTIONS

# A context tag as a reader (or a tokenizer that normalises) sees it.
CONTEXT_TAG = re.compile(r"<\s*/?\s*context\s*>")
BLOCK_OPEN, BLOCK_CLOSE = "\n\n<context>\n", "\n</context>"


def reads_as(text: str) -> str:
    """The text as a reader sees it: NFKC, case-folded, without zero-width characters."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return "".join(c for c in folded if unicodedata.category(c) != "Cf")


def fullwidth(text: str) -> str:
    """`text` in fullwidth forms (`<` as U+FF1C...), which NFKC folds back to ASCII."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


def special_ids(tokenizer: Any) -> set[int]:
    """Every id the tokenizer marks special (not only `all_special_ids`)."""
    return {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}


def template_ids(tokenizer: Any, messages: list[dict[str, Any]]) -> list[int]:
    """The ids the engine gets for `messages` (the chat template, tokenized)."""
    ids = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


@dataclass(frozen=True)
class PromptTokens:
    inside_block: list[str]
    """The special tokens between the context block's own tags."""
    in_prompt: Counter[str]
    """Every special token of the prompt."""
    template_own: Counter[str]
    """The special tokens the chat template itself puts around the same roles."""
    tags_after_instructions: list[str]
    """The context tags (as a reader sees them) after the instructions: the block's own."""


def prompt_tokens(tokenizer: Any, messages: list[dict[str, Any]]) -> PromptTokens:
    """Measures a RAG prompt (our system message with its context block, then the
    conversation) on the token ids the engine receives."""
    system = messages[0]["content"]
    assert system.startswith(RAG_INSTRUCTIONS + BLOCK_OPEN), system[:200]
    assert system.endswith(BLOCK_CLOSE), system[-200:]
    after = system[len(RAG_INSTRUCTIONS) :]
    inside = after[len(BLOCK_OPEN) : -len(BLOCK_CLOSE)]

    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = template_ids(tokenizer, messages)
    encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True)
    assert encoded["input_ids"] == ids  # so the offsets are those of the engine's ids
    start = prompt.index(system) + len(RAG_INSTRUCTIONS + BLOCK_OPEN)
    end = start + len(inside)
    specials = special_ids(tokenizer)

    def names(ids: list[int]) -> Counter[str]:
        return Counter(tokenizer.convert_ids_to_tokens(i) for i in ids if i in specials)

    own = template_ids(tokenizer, [{"role": m["role"], "content": "x"} for m in messages])
    return PromptTokens(
        inside_block=[
            tokenizer.convert_ids_to_tokens(i)
            for i, (s, e) in zip(ids, encoded["offset_mapping"], strict=True)
            if i in specials and s < end and e > start
        ],
        in_prompt=names(ids),
        template_own=names(own),
        tags_after_instructions=CONTEXT_TAG.findall(reads_as(after)),
    )
