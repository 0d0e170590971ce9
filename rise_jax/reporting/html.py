"""Self-contained HTML from the Markdown the report and ``compare`` write.

:func:`markdown_to_html` renders the subset of Markdown those documents use — ``#`` to ``####``
headings, pipe tables (``---:`` right-aligns a column), ``- `` lists, paragraphs (two trailing
spaces break a line), ``**bold**``, `` `code` ``, ``[text](target)`` links and ``![alt](file)``
images — HTML-escaping everything else. Images are embedded as base64 ``data:`` URIs (a missing
file becomes its alt text), so the page needs no network and no file beside it; links stay
relative (the generation files the report points at). :func:`page` wraps a body in a document with
inline CSS and no scripts.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import os
import re
from collections.abc import Callable

_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_HEADING = re.compile(r"^(#{1,4})\s+(.*)$")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?\s*$")


def data_uri(path: str) -> str | None:
    """``path`` as a base64 ``data:`` URI; None when it is not a readable file."""
    if not os.path.isfile(path):
        return None
    mime = mimetypes.guess_type(path)[0] or "application/octet-stream"
    with open(path, "rb") as fh:
        return f"data:{mime};base64," + base64.b64encode(fh.read()).decode("ascii")


def slug(text: str) -> str:
    """An anchor id for a heading."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


def _inline(text: str, image: Callable[[str, str], str]) -> str:
    """Inline Markdown of one line: code spans first (their content stays literal), then images,
    links and bold; everything else escaped."""
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(_spans(text[pos : m.start()], image))
        out.append(f"<code>{html.escape(m.group(1))}</code>")
        pos = m.end()
    out.append(_spans(text[pos:], image))
    return "".join(out)


def _spans(text: str, image: Callable[[str, str], str]) -> str:
    pieces, pos = [], 0
    for m in re.finditer(f"{_IMAGE.pattern}|{_LINK.pattern}", text):
        pieces.append(_bold(text[pos : m.start()]))
        if m.group(0).startswith("!"):
            pieces.append(image(m.group(2), m.group(1)))
        else:
            label, target = m.group(3), m.group(4)
            pieces.append(f'<a href="{html.escape(target, quote=True)}">{_bold(label)}</a>')
        pos = m.end()
    pieces.append(_bold(text[pos:]))
    return "".join(pieces)


def _bold(text: str) -> str:
    return _BOLD.sub(lambda m: f"<strong>{m.group(1)}</strong>", html.escape(text.replace("\\|", "|"), quote=False))


def _cells(line: str) -> list[str]:
    line = line.strip()
    line = line[1:] if line.startswith("|") else line
    line = line[:-1] if line.endswith("|") and not line.endswith("\\|") else line
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)]


def _table(lines: list[str], image: Callable[[str, str], str]) -> str:
    header, rule, body = _cells(lines[0]), _cells(lines[1]), [_cells(x) for x in lines[2:]]
    align = ["right" if r.endswith(":") else "" for r in rule]
    numeric = re.compile(r"^[+\-−]?[\d.,]+(\s*→\s*[+\-−]?[\d.,]+)?(\s*\([+\-−]?[\d.,]+\))?$")

    def cell(tag: str, text: str, i: int) -> str:
        right = (i < len(align) and align[i]) or (tag == "td" and bool(numeric.match(text)))
        cls = ' class="num"' if right else ""
        return f"<{tag}{cls}>{_inline(text, image)}</{tag}>"

    head = "<tr>" + "".join(cell("th", c, i) for i, c in enumerate(header)) + "</tr>"
    rows = ["<tr>" + "".join(cell("td", c, i) for i, c in enumerate(r)) + "</tr>" for r in body]
    thead = f"<thead>{head}</thead>\n" if any(header) else ""  # an all-blank header row is not shown
    return '<div class="table"><table>\n' + thead + "<tbody>\n" + "\n".join(rows) + "\n</tbody></table></div>"


def markdown_to_html(text: str, base_dir: str, toc: bool = False) -> str:
    """The HTML body of Markdown ``text``; image paths are read relative to ``base_dir`` and
    embedded. With ``toc``, a list of links to the ``##`` sections follows the first heading."""

    def image(target: str, alt: str) -> str:
        uri = data_uri(target if os.path.isabs(target) else os.path.join(base_dir, target))
        if uri is None:
            return f'<span class="missing">[{html.escape(alt)}: {html.escape(target)} missing]</span>'
        return f'<figure><img src="{uri}" alt="{html.escape(alt, quote=True)}"><figcaption>{html.escape(alt)}</figcaption></figure>'

    lines = text.splitlines()
    blocks: list[str] = []
    sections: list[tuple[str, str]] = []
    used: set[str] = set()
    para: list[str] = []

    def flush() -> None:
        if para:
            body = ""
            for i, line in enumerate(para):
                body += _inline(line.strip(), image)
                if i < len(para) - 1:
                    body += "<br>\n" if line.endswith("  ") else "\n"
            only_images = all(_IMAGE.fullmatch(p.strip()) for p in para)
            blocks.append(body if only_images else f"<p>{body}</p>")
            para.clear()

    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped:
            flush()
            i += 1
            continue
        m = _HEADING.match(stripped)
        if m:
            flush()
            level, title = len(m.group(1)), m.group(2).strip()
            anchor = slug(title)
            while anchor in used:
                anchor += "-x"
            used.add(anchor)
            if level == 2:
                sections.append((anchor, title))
            blocks.append(f'<h{level} id="{anchor}">{_inline(title, image)}</h{level}>')
            i += 1
            continue
        if stripped.startswith("|") and i + 1 < len(lines) and _RULE.match(lines[i + 1].strip()):
            flush()
            j = i + 2
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            blocks.append(_table([x.strip() for x in lines[i:j]], image))
            i = j
            continue
        if stripped.startswith("- "):
            flush()
            items = []
            while i < len(lines) and lines[i].strip().startswith("- "):
                items.append(f"<li>{_inline(lines[i].strip()[2:], image)}</li>")
                i += 1
            blocks.append("<ul>\n" + "\n".join(items) + "\n</ul>")
            continue
        para.append(line)
        i += 1
    flush()
    if toc and sections:
        nav = '<nav class="toc"><strong>Sections</strong> ' + " · ".join(
            f'<a href="#{a}">{html.escape(t)}</a>' for a, t in sections
        )
        blocks.insert(1 if blocks and blocks[0].startswith("<h1") else 0, nav + "</nav>")
    return "\n".join(blocks) + "\n"


CSS = """
:root { --fg: #1d2330; --muted: #5b6474; --line: #d9dee7; --head: #f3f5f9; --accent: #3559a8; }
* { box-sizing: border-box; }
body { margin: 0; background: #fafbfc; color: var(--fg);
  font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "Noto Sans", "DejaVu Sans", sans-serif; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 32px 48px; background: #fff;
  border-left: 1px solid var(--line); border-right: 1px solid var(--line); min-height: 100vh; }
h1 { font-size: 26px; margin: 4px 0 8px; }
h2 { font-size: 20px; margin: 32px 0 10px; padding-bottom: 4px; border-bottom: 2px solid var(--line); }
h3 { font-size: 16px; margin: 22px 0 8px; }
h4 { font-size: 15px; margin: 18px 0 6px; }
p { margin: 8px 0; }
a { color: var(--accent); }
code { font: 13px/1.4 "DejaVu Sans Mono", Menlo, Consolas, monospace; background: #f1f3f7;
  padding: 1px 4px; border-radius: 3px; overflow-wrap: anywhere; }
.table { overflow-x: auto; margin: 10px 0 14px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 10px; text-align: left; vertical-align: top; }
th { background: var(--head); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tbody tr:nth-child(even) td { background: #fbfcfd; }
figure { display: inline-block; margin: 8px 12px 12px 0; vertical-align: top; max-width: 100%; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); border-radius: 4px; background: #fff; }
figcaption { font-size: 12px; color: var(--muted); }
ul { margin: 6px 0 10px; padding-left: 22px; }
nav.toc { font-size: 13px; color: var(--muted); margin: 4px 0 16px; line-height: 1.9; }
.missing { color: #a33; font-style: italic; }
section.headline { background: #f5f8ff; border: 1px solid #c9d6f2; border-radius: 6px; padding: 6px 18px 10px;
  margin: 10px 0 18px; }
section.headline h2 { margin-top: 8px; border-bottom: none; }
section.headline table { font-size: 15px; }
section.headline td:first-child { font-weight: 600; white-space: nowrap; }
"""


def page(title: str, body: str) -> str:
    """A complete HTML document: ``body`` under ``<main>``, inline CSS, no scripts, no network."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n"
    )
