"""HTML building blocks of ``minority report``: escaping, embedded images, tables, code blocks and a small
Markdown subset (headings, tables, lists, emphasis, links, images)."""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

MAX_DEPTH = 3

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem;line-height:1.45}
h1{border-bottom:2px solid #444;padding-bottom:.3rem} h2{margin-top:2rem;border-bottom:1px solid #ccc}
section.run{border:1px solid #ddd;border-radius:6px;padding:0 1.2rem 1rem;margin:1.5rem 0;background:#fcfcfc}
table{border-collapse:collapse;margin:.8rem 0;font-size:.86rem}
th,td{border:1px solid #bbb;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#eee} tr:nth-child(even) td{background:#f6f6f6}
pre{background:#f1f1f1;padding:.6rem;overflow-x:auto;font-size:.8rem;white-space:pre-wrap;word-break:break-all}
code{background:#f1f1f1;padding:0 .2rem}
img{max-width:100%} img.thumb{image-rendering:pixelated;border:1px solid #ccc}
.gallery td{text-align:center;font-size:.75rem} .muted{color:#666;font-size:.85rem}
"""


@dataclass
class Section:
    """A part of the report: a title, the folder it comes from, and its HTML body."""

    title: str
    folder: Path
    kind: str
    body: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------
# Small HTML helpers


def esc(text) -> str:
    """HTML-escape any value."""
    return html.escape("" if text is None else str(text), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    """A ``data:`` URI of ``data``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_tag(path: Path, alt: str, max_side: int | None = None, css_class: str = "", width: int | None = None) -> str:
    """An ``<img>`` with the file embedded (PNG; downscaled to ``max_side`` pixels if bigger)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if max_side and max(im.size) > max_side:
                im.thumbnail((max_side, max_side))
            buf = io.BytesIO()
            im.save(buf, format="PNG")
    except (OSError, ValueError) as exc:
        return f"<p class='muted'>[image {esc(path.name)} could not be read: {esc(type(exc).__name__)}]</p>"
    attrs = f' class="{css_class}"' if css_class else ""
    attrs += f' width="{width}"' if width else ""
    return f'<img src="{data_uri(buf.getvalue(), "image/png")}" alt="{esc(alt)}" title="{esc(alt)}"{attrs}>'


def html_table(header: list, rows: list[list], raw: bool = False) -> str:
    """A ``<table>``; cells are escaped unless ``raw``."""
    cell = (lambda x: str(x)) if raw else esc
    out = ["<table>", "<tr>" + "".join(f"<th>{cell(h)}</th>" for h in header) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{cell(c)}</td>" for c in r) + "</tr>" for r in rows]
    out.append("</table>")
    return "\n".join(out)


def code_block(text: str) -> str:
    """A ``<pre><code>`` block of ``text`` (escaped)."""
    return f"<pre><code>{esc(text)}</code></pre>"


# ------------------------------------------------------------------------------------------------
# Markdown (the subset results.md uses) -> HTML, images embedded from ``base``


_INLINE = [
    (re.compile(r"`([^`]+)`"), lambda m: f"<code>{m.group(1)}</code>"),
    (re.compile(r"\*\*([^*]+)\*\*"), lambda m: f"<strong>{m.group(1)}</strong>"),
]


def _inline(text: str, base: Path) -> str:
    parts = re.split(r"(!\[[^\]]*\]\([^)]+\))", text)
    out = []
    for p in parts:
        m = re.fullmatch(r"!\[([^\]]*)\]\(([^)]+)\)", p)
        if m:
            path = (base / m.group(2)).resolve()
            out.append(image_tag(path, m.group(1)) if path.is_file() else f"[missing image {esc(m.group(2))}]")
            continue
        s = esc(p)
        for rx, fn in _INLINE:
            s = rx.sub(fn, s)
        out.append(s)
    return "".join(out)


def _table_cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


def markdown_to_html(text: str, base: Path, heading_offset: int = 1) -> str:
    """Render headings, paragraphs, bullet lists, pipe tables, fenced code and inline code/bold/images."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(code_block("\n".join(lines[i + 1 : j])))
            i = j + 1
        elif m := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(6, len(m.group(1)) + heading_offset)
            out.append(f"<h{level}>{_inline(m.group(2), base)}</h{level}>")
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            rows = [_table_cells(b) for b in block if not re.fullmatch(r"\|?\s*:?-{3,}.*", b.replace(" ", ""))]
            if rows:
                out.append(html_table([_inline(c, base) for c in rows[0]],
                                      [[_inline(c, base) for c in r] for r in rows[1:]], raw=True))
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{_inline(lines[i][2:], base)}</li>")
                i += 1
            out.append("<ul>" + "".join(items) + "</ul>")
        elif not line.strip():
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not lines[i].startswith(("|", "- ", "#", "```")):
                para.append(lines[i])
                i += 1
            out.append(f"<p>{_inline(' '.join(para), base)}</p>")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------
# Sections
