"""Render corpus sources to PDF with PyMuPDF, reproducibly.

``python -m fsku.corpus.render [SRC_DIR] [OUT_DIR]`` turns every ``*.txt`` in
``data/raw/corpus_src`` into a PDF in ``data/raw/corpus``: A4 pages with a running header and a
page-number footer (which the chunker must drop), larger type for headings, ruled tables and
two-column pages. Output is byte-identical across runs (fixed metadata, no document id, embedded
font subset).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pymupdf

from fsku.corpus.source import Block, SourceDoc, parse_source
from fsku.io import atomic_path

PAGE_W, PAGE_H = 595.0, 842.0  # A4 in points
MARGIN_X, MARGIN_TOP, MARGIN_BOTTOM = 62.0, 72.0, 72.0
BODY_SIZE, LINE_H, PARA_GAP = 10.0, 15.5, 5.0
HEADING_SIZE = {1: 14.0, 2: 12.0}
COLUMN_GAP = 24.0
FONT_NAME = "kr"


class Layout:
    """A cursor over pages: wraps words into lines and starts pages as needed."""

    def __init__(self, doc: pymupdf.Document, src: SourceDoc):
        self.doc, self.src = doc, src
        self.font = pymupdf.Font("korea")
        self.page: pymupdf.Page | None = None
        self.columns: list[tuple[float, float]] = [(MARGIN_X, PAGE_W - MARGIN_X)]
        self.col = 0
        self.y = 0.0
        self.bottom = PAGE_H - MARGIN_BOTTOM

    # pages -------------------------------------------------------------
    def new_page(self, columns: int = 1) -> None:
        page = self.doc.new_page(width=PAGE_W, height=PAGE_H)
        page.insert_font(fontname=FONT_NAME, fontbuffer=self.font.buffer)
        n = self.doc.page_count
        page.insert_text((MARGIN_X, 40), self.src.header, fontname=FONT_NAME, fontsize=8,
                         color=(0.35, 0.35, 0.35))
        label = f"- {n} -"
        w = self.font.text_length(label, 9)
        page.insert_text(((PAGE_W - w) / 2, PAGE_H - 36), label, fontname=FONT_NAME, fontsize=9)
        self.page = page
        if columns == 1:
            self.columns = [(MARGIN_X, PAGE_W - MARGIN_X)]
        else:
            width = (PAGE_W - 2 * MARGIN_X - COLUMN_GAP) / 2
            self.columns = [(MARGIN_X, MARGIN_X + width),
                            (MARGIN_X + width + COLUMN_GAP, PAGE_W - MARGIN_X)]
        self.col = 0
        self.y = MARGIN_TOP
        self.bottom = PAGE_H - MARGIN_BOTTOM

    def ensure(self, height: float) -> None:
        if self.page is None:
            self.new_page()
        if self.y + height <= self.bottom:
            return
        if self.col + 1 < len(self.columns):
            self.col += 1
            self.y = MARGIN_TOP
        else:
            self.new_page(columns=len(self.columns))

    # text --------------------------------------------------------------
    def wrap(self, text: str, width: float, size: float) -> list[str]:
        lines, cur = [], ""
        for word in text.split(" "):
            cand = f"{cur} {word}" if cur else word
            if self.font.text_length(cand, size) <= width:
                cur = cand
                continue
            if cur:
                lines.append(cur)
            cur = word
            while self.font.text_length(cur, size) > width:  # a word wider than the line
                k = len(cur)
                while k > 1 and self.font.text_length(cur[:k], size) > width:
                    k -= 1
                lines.append(cur[:k])
                cur = cur[k:]
        if cur:
            lines.append(cur)
        return lines

    def paragraph(self, text: str, size: float = BODY_SIZE, indent: float = 0.0,
                  gap_before: float = 0.0, line_h: float = LINE_H) -> None:
        if self.page is not None and self.y > MARGIN_TOP:
            self.y += gap_before
        x0, x1 = self.columns[self.col]
        for line in self.wrap(text, x1 - x0 - indent, size):
            self.ensure(line_h)
            x0, _ = self.columns[self.col]
            self.page.insert_text((x0 + indent, self.y + size), line, fontname=FONT_NAME, fontsize=size)
            self.y += line_h
        self.y += PARA_GAP

    def table(self, rows: list[list[str]]) -> None:
        ncol = max(len(r) for r in rows)
        rows = [r + [""] * (ncol - len(r)) for r in rows]
        x0, x1 = self.columns[self.col]
        total = x1 - x0
        weights = [max(4, min(40, max(len(r[c]) for r in rows))) for c in range(ncol)]
        widths = [total * w / sum(weights) for w in weights]
        pad, size, lh = 3.0, 9.0, 13.0
        self.y += 4
        for ri, row in enumerate(rows):
            wrapped = [self.wrap(cell, w - 2 * pad, size) or [""] for cell, w in zip(row, widths)]
            height = max(len(w) for w in wrapped) * lh + 2 * pad
            self.ensure(height)
            x0, _ = self.columns[self.col]
            x = x0
            shape = self.page.new_shape()
            for cell_lines, w in zip(wrapped, widths):
                shape.draw_rect(pymupdf.Rect(x, self.y, x + w, self.y + height))
                for li, line in enumerate(cell_lines):
                    self.page.insert_text((x + pad, self.y + pad + li * lh + size), line,
                                          fontname=FONT_NAME, fontsize=size)
                x += w
            shape.finish(width=0.6, color=(0, 0, 0), fill=(0.92, 0.92, 0.92) if ri == 0 else None)
            shape.commit(overlay=False)
            self.y += height
        self.y += PARA_GAP + 4

    def block(self, b: Block) -> None:
        if b.kind == "heading":
            size = HEADING_SIZE[b.level]
            self.ensure(size * 1.6 + 3 * LINE_H)  # keep a heading with what follows
            self.paragraph(b.text, size=size, gap_before=10.0, line_h=size * 1.6)
        elif b.kind == "para":
            self.paragraph(b.text, gap_before=2.0)
        elif b.kind in ("item", "bullet"):
            text = f"• {b.text}" if b.kind == "bullet" else b.text
            self.paragraph(text, indent=12.0 * b.level)
        elif b.kind == "table":
            self.table(b.rows)
        elif b.kind == "pagebreak":
            self.new_page()
        elif b.kind == "columns":
            self.new_page(columns=2)
            # balance the two columns: measure the text in one column, then break at half height
            probe = Layout(pymupdf.open(), self.src)
            probe.new_page(columns=2)
            probe.bottom = 1e9
            for child in b.children:
                probe.block(child)
            self.bottom = min(PAGE_H - MARGIN_BOTTOM, MARGIN_TOP + (probe.y - MARGIN_TOP) / 2 + LINE_H)
            for child in b.children:
                self.block(child)
            self.new_page(columns=1)
        else:  # pragma: no cover - parse_body emits only the kinds above
            raise ValueError(f"unknown block kind {b.kind}")


def render(src: SourceDoc) -> bytes:
    doc = pymupdf.open()
    layout = Layout(doc, src)
    layout.new_page()
    layout.paragraph(src.title, size=16.0, line_h=24.0)
    layout.y += 8
    for b in src.blocks:
        layout.block(b)
    # a trailing empty page (after a columns block) is dropped
    last = doc[-1]
    if not last.get_text().replace(src.header, "").strip().strip("-0123456789 \n"):
        doc.delete_page(-1)
    doc.set_metadata({"title": src.title, "author": "fsku project", "subject": src.kind,
                      "creator": "fsku.corpus.render", "producer": "PyMuPDF",
                      "creationDate": "", "modDate": "", "keywords": ""})
    doc.subset_fonts()
    return doc.tobytes(garbage=4, deflate=True, no_new_id=True)


def render_dir(src_dir: Path, out_dir: Path) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(src_dir.glob("*.txt")):
        data = render(parse_source(path))
        target = out_dir / f"{path.stem}.pdf"
        with atomic_path(target) as tmp:
            tmp.write_bytes(data)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    src = Path(argv[0]) if argv else Path("data/raw/corpus_src")
    out = Path(argv[1]) if len(argv) > 1 else Path("data/raw/corpus")
    for p in render_dir(src, out):
        print(p)


if __name__ == "__main__":
    main()
