"""The plain-text table every benchmark prints, and the same rows as a Markdown table."""

from __future__ import annotations

from typing import Any


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as aligned columns (the first row's keys), with a dashed line under the header."""
    header = list(rows[0])
    cells = [header, *([str(row.get(k)) for k in header] for row in rows)]
    widths = [max(len(r[j]) for r in cells) for j in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows of dicts as a Markdown table (`columns`, default the first row's keys; None as an empty cell)."""
    header = columns or list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = ("" if row.get(k) is None else str(row.get(k)).replace("|", "\\|") for k in header)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
