"""The embedded corpus: reproducible from its sources, and shaped as the project promises."""

import re

import pymupdf

from fsku.corpus.render import render
from fsku.corpus.source import body_text, parse_source
from fsku.retrieval.evaluate import load_queries, overlap


def test_pdfs_reproduce_from_sources(root):
    sources = sorted((root / "data/raw/corpus_src").glob("*.txt"))
    pdfs = sorted((root / "data/raw/corpus").glob("*.pdf"))
    assert len(sources) >= 15 and [p.stem for p in pdfs] == [s.stem for s in sources]
    for src in sources:
        assert render(parse_source(src)) == (root / "data/raw/corpus" / f"{src.stem}.pdf").read_bytes(), src.name


def test_corpus_shape(root):
    sources = sorted((root / "data/raw/corpus_src").glob("*.txt"))
    kinds, tables, columns = set(), 0, 0
    for src in sources:
        doc = parse_source(src)
        kinds.add(doc.kind)
        assert len(re.findall("[가-힣]", body_text(src))) >= 1500, src.name
        tables += sum(b.kind == "table" for b in doc.blocks)
        columns += sum(b.kind == "columns" for b in doc.blocks)
    assert kinds == {"statute", "guideline"}
    assert tables >= 3 and columns >= 1


def test_two_column_page_exists(root):
    found = False
    for pdf in sorted((root / "data/raw/corpus").glob("*.pdf")):
        for page in pymupdf.open(pdf):
            mid = page.rect.width / 2
            lines = [b for b in page.get_text("blocks") if b[1] > 60 and b[3] < page.rect.height - 60]
            if sum(b[2] < mid for b in lines) >= 3 and sum(b[0] > mid for b in lines) >= 3:
                found = True
    assert found


def test_retrieval_queries_are_labelled_with_real_passages(root, corpus_chunks):
    queries = load_queries(root / "data/raw/retrieval_queries.csv")
    assert len(queries) >= 60
    chunks, _ = corpus_chunks
    for q in queries:
        src = root / "data/raw/corpus_src" / q["source"].replace(".pdf", ".txt")
        assert q["passage"] in body_text(src), q["query_id"]
        # and the chunker keeps every passage findable in a chunk of its document
        best = max(overlap(q["passage"], c["text"]) for c in chunks if c["source"] == q["source"])
        assert best >= 0.99, (q["query_id"], best)
