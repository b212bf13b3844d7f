"""Text from the data (column names, file names, messages, station ids) made inert
before it goes into a report: `report.md` and `fleet.md` are rendered as Markdown and
HTML, and their tables get pasted into spreadsheets. (The toolkit writes no CSV file.)"""
from __future__ import annotations

# Markdown's inline punctuation; HTML's specials become entities, so a column named
# `<img src=x onerror=...>` is text, not a tag, in any renderer.
MARKDOWN_SPECIALS = set("\\`*_[]()#!|~{}")
HTML_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
FORMULA_LEADS = ("=", "+", "-", "@")  # a spreadsheet reads a cell starting so as a formula


def escape(text: object) -> str:
    """Text from the data (column names, file names, messages) made inert in Markdown and
    HTML, on one line: HTML specials as entities, Markdown punctuation and `|` escaped
    with a backslash, and a leading = + - @ escaped too (so neither a list nor a formula
    when pasted into a spreadsheet)."""
    text = " ".join(str(text).split())
    out = "".join(HTML_ENTITIES.get(c) or (f"\\{c}" if c in MARKDOWN_SPECIALS else c) for c in text)
    return f"\\{out}" if out.startswith(FORMULA_LEADS) and len(out) > 1 else out
