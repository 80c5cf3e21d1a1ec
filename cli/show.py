"""How data is printed to a terminal (documents' text, paths and titles, what a client or
another program wrote): as written, never read as console markup or terminal control."""

from __future__ import annotations

import re

from rich.markup import escape
from rich.text import Text

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def shown(text: str) -> str:
    """`text` with its control characters other than tab and newline written as escapes
    ("\\x1b"): a document's escape sequences would otherwise recolour the terminal or set its
    title, and a carriage return overwrite the line."""
    return _CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def data(text: str) -> Text:
    """`text` to print on its own: neither markup nor terminal control."""
    return Text(shown(text))


def in_markup(text: str) -> str:
    """`text` to put into a markup string: its brackets escaped, its control characters
    shown."""
    return escape(shown(text))
