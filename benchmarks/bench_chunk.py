"""Chunk throughput (pages/s) on the embedded corpus, and index build time.

    python benchmarks/bench_chunk.py [--repeat 5]

Needs `models/encoder` (run `make run` or `dvc repro encoder` first) for the index build part.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import ROOT, machine

from fsku.chunking.config import ChunkConfig
from fsku.chunking.pipeline import chunk_corpus
from fsku.config import from_dict
from fsku.io import write_jsonl
from fsku.retrieval.build import build_index
from fsku.retrieval.config import IndexConfig


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    print(f"machine: {machine()}")
    chunk_corpus(ROOT / "data/raw/corpus", ChunkConfig())  # warm-up (fonts, imports)
    best = float("inf")
    for _ in range(args.repeat):
        t = time.perf_counter()
        rows, metrics = chunk_corpus(ROOT / "data/raw/corpus", ChunkConfig())
        best = min(best, time.perf_counter() - t)
    pages = metrics["pages"]
    print(f"chunk: {metrics['documents']} documents, {pages} pages, {metrics['chunks']} chunks; "
          f"best of {args.repeat}: {best:.3f} s = {pages / best:.0f} pages/s")
    with tempfile.TemporaryDirectory() as tmp:
        write_jsonl(Path(tmp) / "chunks.jsonl", rows)
        cfg = from_dict(IndexConfig, {"dense": {"model": str(ROOT / "models/encoder")}}, prefix="index")
        t = time.perf_counter()
        build_index(Path(tmp) / "chunks.jsonl", Path(tmp) / "index", cfg)
        print(f"index build ({len(rows)} chunks, BM25 + static encoder + FAISS, incl. model load): "
              f"{time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
