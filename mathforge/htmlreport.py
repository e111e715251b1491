"""Self-contained HTML reports: one file, plots inline as SVG, no script and no network, so a report
opens the same from a laptop, a CI artifact or an air-gapped cluster.

A page is a title and a list of blocks, each already HTML: `heading`, `paragraph`, `table` and
`figure` (a matplotlib figure inlined as SVG) build them with escaping done in one place.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mathforge.io import write_text

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 62rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
figure { margin: 1rem 0; } figure svg { max-width: 100%; height: auto; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 0.8rem; }
"""


def page(title: str, blocks: Iterable[str]) -> str:
    """A whole HTML document from already-rendered blocks."""
    body = "\n".join(blocks)
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n"
            f"<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def heading(text: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(text)}</h{level}>"


def paragraph(text: str, note: bool = False) -> str:
    cls = ' class="note"' if note else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(fig: Any, caption: str, name: str) -> str:
    """A matplotlib figure inlined as SVG (text kept as paths, so no font is needed to view it)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})  # no timestamp: same study, same file
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]  # drop the XML prologue and DOCTYPE: invalid inside an HTML body
    return (f"<figure data-plot=\"{html.escape(name)}\">{svg}"
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def write_page(path: str | Path, title: str, blocks: Iterable[str]) -> None:
    """Render and write the page atomically."""
    write_text(path, page(title, blocks))
