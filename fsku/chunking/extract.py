"""PDF text extraction in reading order with PyMuPDF.

Per page: text lines with their boxes and font sizes; ruled tables found by PyMuPDF's table
finder (only on pages that carry vector drawings, which keeps text-only pages fast) and emitted as
one line per row; two-column pages read column by column; running headers, footers and page
numbers dropped when they repeat across a document's pages; wrapped lines joined into paragraphs.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pymupdf

from fsku.chunking.clean import clean_text, join_lines

pymupdf.no_recommend_layout()

MARGIN_FRAC = 0.075  # top/bottom band of the page where running headers and footers live
PAGE_NUMBER_RE = re.compile(r"^(?:[-–—]\s*)?(?:page\s*)?\d{1,4}(?:\s*(?:/|of)\s*\d{1,4})?(?:\s*[-–—])?$",
                            re.IGNORECASE)
MARKER_RE = re.compile(r"^(?:[①-⑳]|\d{1,2}\.\s|[가-하]\.\s|\(\d{1,2}\)\s|[•◦▪■□○●∙·-]\s|제\s*\d+\s*조)")


class ExtractError(Exception):
    """The file cannot be read as a PDF with text; the message is the reason."""


@dataclass
class Line:
    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    size: float
    table_rows: list[str] | None = None  # set for a table placeholder


@dataclass
class Element:
    """One paragraph, heading or table row of a document, in reading order."""

    kind: str  # heading | text | table
    text: str
    page: int  # 1-based
    level: int = 0  # heading level (1 = largest)


def _page_lines(page: pymupdf.Page) -> list[Line]:
    lines = []
    for block in page.get_text("dict", flags=pymupdf.TEXTFLAGS_TEXT)["blocks"]:
        for ln in block.get("lines", []):
            spans = [s for s in ln["spans"] if s["text"].strip()]
            if not spans:
                continue
            text = "".join(s["text"] for s in ln["spans"]).strip()
            size = max(spans, key=lambda s: len(s["text"]))["size"]
            x0, y0, x1, y1 = ln["bbox"]
            lines.append(Line(text, x0, y0, x1, y1, round(size, 1)))
    return lines


def _tables(page: pymupdf.Page) -> list[Line]:
    if not page.get_cdrawings():
        return []
    found = []
    for tab in page.find_tables().tables:
        rows = []
        for row in tab.extract():
            cells = [re.sub(r"\s+", " ", c or "").strip() for c in row]
            if any(cells):
                rows.append(" | ".join(cells))
        if rows:
            x0, y0, x1, y1 = tab.bbox
            found.append(Line("", x0, y0, x1, y1, 0.0, table_rows=rows))
    return found


def _inside(line: Line, box: Line) -> bool:
    cx, cy = (line.x0 + line.x1) / 2, (line.y0 + line.y1) / 2
    return box.x0 - 1 <= cx <= box.x1 + 1 and box.y0 - 1 <= cy <= box.y1 + 1


def _reading_order(lines: list[Line], width: float) -> list[tuple[int, Line]]:
    """Order lines, tagging each with its column (0 = full width / single column)."""
    mid = width / 2
    left = [ln for ln in lines if ln.x1 < mid - 2 and ln.table_rows is None]
    right = [ln for ln in lines if ln.x0 > mid + 2 and ln.table_rows is None]
    chars = lambda ls: sum(len(x.text) for x in ls)  # noqa: E731
    two_col = len(left) >= 3 and len(right) >= 3 and chars(right) >= 0.2 * max(1, chars(lines))
    if not two_col:
        return [(0, ln) for ln in sorted(lines, key=lambda ln: (round(ln.y0), ln.x0))]
    in_cols = {id(x) for x in left + right}
    spanning = sorted((ln for ln in lines if id(ln) not in in_cols), key=lambda ln: ln.y0)
    ordered: list[tuple[int, Line]] = []
    bounds = [-1.0] + [ln.y0 for ln in spanning] + [float("inf")]
    for i in range(len(bounds) - 1):
        lo, hi = bounds[i], bounds[i + 1]
        if i > 0:
            ordered.append((0, spanning[i - 1]))
        for col, group in ((1, left), (2, right)):
            seg = sorted((ln for ln in group if lo <= ln.y0 < hi), key=lambda ln: ln.y0)
            ordered += [(col, ln) for ln in seg]
    return ordered


def _margin_key(line: Line, height: float) -> str | None:
    """A key for lines in the header/footer bands (digits folded so page numbers match)."""
    if line.y1 < height * MARGIN_FRAC:
        zone = "top"
    elif line.y0 > height * (1 - MARGIN_FRAC):
        zone = "bottom"
    else:
        return None
    return f"{zone}:{re.sub(r'[0-9]+', '#', line.text.strip())}"


def extract_pdf(path: str | Path) -> tuple[list[Element], int]:
    """Elements of a PDF in reading order, and its page count. Raises ExtractError."""
    path = Path(path)
    head = path.read_bytes()[:1024]
    if not head:
        raise ExtractError("empty file")
    if b"%PDF-" not in head:
        raise ExtractError("not a PDF (no %PDF- header)")
    try:
        doc = pymupdf.open(path)
    except Exception as e:  # MuPDF raises its own error types
        raise ExtractError(f"corrupt PDF: {e}") from None
    with doc:
        if doc.needs_pass or doc.is_encrypted:
            raise ExtractError("encrypted PDF (password required)")
        try:
            pages = [(page.rect.width, page.rect.height, _page_lines(page), _tables(page)) for page in doc]
        except Exception as e:
            raise ExtractError(f"corrupt PDF: {e}") from None
    n_pages = len(pages)
    if not any(lines for _, _, lines, _ in pages):
        raise ExtractError("no text layer (scanned or image-only PDF)")

    # running headers/footers: margin lines that repeat on at least half the pages (and on 2+)
    seen = Counter()
    for _, h, lines, _ in pages:
        seen.update({k for ln in lines if (k := _margin_key(ln, h))})
    repeat = max(2, (n_pages + 1) // 2)

    def is_furniture(ln: Line, h: float) -> bool:
        key = _margin_key(ln, h)
        if key is None:
            return False
        return seen[key] >= repeat or bool(PAGE_NUMBER_RE.match(ln.text.strip()))

    sizes = Counter()
    for _, h, lines, _ in pages:
        for ln in lines:
            if not is_furniture(ln, h):
                sizes[ln.size] += len(ln.text)
    body_size = sizes.most_common(1)[0][0] if sizes else 10.0
    heading_sizes = sorted({s for s in sizes if s >= body_size * 1.15}, reverse=True)

    elements: list[Element] = []
    for pno, (w, h, lines, tables) in enumerate(pages, 1):
        body = [ln for ln in lines if not is_furniture(ln, h) and not any(_inside(ln, t) for t in tables)]
        para: list[str] = []
        prev: tuple[int, Line] | None = None

        def flush() -> None:
            if para:
                ln0 = para_lines[0]
                text = clean_text(join_lines(para))
                if text:
                    if ln0.size in heading_sizes:
                        elements.append(Element("heading", text, pno, heading_sizes.index(ln0.size) + 1))
                    else:
                        elements.append(Element("text", text, pno))
            para.clear()
            para_lines.clear()

        para_lines: list[Line] = []
        for col, ln in _reading_order(body + tables, w):
            if ln.table_rows is not None:
                flush()
                elements += [Element("table", clean_text(r), pno) for r in ln.table_rows]
                prev = None
                continue
            if prev is not None:
                pcol, pln = prev
                gap = ln.y0 - pln.y1
                new = (col != pcol or ln.size != pln.size or gap > 0.45 * ln.size or gap < -2
                       or MARKER_RE.match(ln.text) is not None)
                if new:
                    flush()
            para.append(ln.text)
            para_lines.append(ln)
            prev = (col, ln)
        flush()
    return _merge_continued(elements), n_pages


SENTENCE_END_RE = re.compile(r"(?:[.?!:;。)\]\"'」』]|다|요|음|함|임|것)$")


def _merge_continued(elements: list[Element]) -> list[Element]:
    """Rejoin a paragraph that a column or page break cut in two."""
    out: list[Element] = []
    for el in elements:
        if (out and el.kind == "text" and out[-1].kind == "text"
                and not SENTENCE_END_RE.search(out[-1].text) and not MARKER_RE.match(el.text)):
            out[-1] = Element("text", f"{out[-1].text} {el.text}", out[-1].page)
        else:
            out.append(el)
    return out
