"""Hybrid query latency at 1k and 20k chunks, and bm25s+kiwipiepy against rank-bm25.

    python benchmarks/bench_retrieval.py [--sizes 1000 20000] [--rounds 5]

The corpus is enlarged synthetically: each synthetic chunk mixes the sentences of two real chunks
(seeded), so the text stays Korean with the corpus' vocabulary. Queries are the labelled
retrieval queries, run `--rounds` times; latency covers the whole hybrid path (morpheme analysis,
BM25, encoding, FAISS, fusion). The rank-bm25 comparison uses the very same kiwipiepy tokens, so it
measures the BM25 engines alone. Needs `models/encoder` (`dvc repro encoder`).
"""

from __future__ import annotations

import argparse
import random
import re
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT, machine, pct

from fsku.config import from_dict
from fsku.io import read_jsonl, write_jsonl
from fsku.retrieval.bm25 import BM25Index
from fsku.retrieval.build import build_index
from fsku.retrieval.config import IndexConfig
from fsku.retrieval.evaluate import load_queries
from fsku.retrieval.hybrid import Retriever


def synthetic(chunks: list[dict], n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    sents = [re.split(r"(?<=[.다])\s+", c["text"]) for c in chunks]
    out = list(chunks[:n])
    while len(out) < n:
        a, b = rng.sample(range(len(chunks)), 2)
        mix = sents[a] + sents[b]
        rng.shuffle(mix)
        text = " ".join(mix[: rng.randint(2, 6)])
        out.append({**chunks[a], "chunk_id": f"syn{len(out):06d}", "position": len(out), "text": text})
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    print(f"machine: {machine()}")
    base = read_jsonl(ROOT / "data/processed/chunks.jsonl")
    queries = [q["query"] for q in load_queries(ROOT / "data/raw/retrieval_queries.csv")]
    cfg = from_dict(IndexConfig, {"dense": {"model": str(ROOT / "models/encoder")}}, prefix="index")
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            chunks = synthetic(base, n)
            write_jsonl(tmp / "chunks.jsonl", chunks)
            t = time.perf_counter()
            meta = build_index(tmp / "chunks.jsonl", tmp / "index", cfg)
            build_s = time.perf_counter() - t
            r = Retriever.load(tmp / "index", cfg)
            for q in queries[:5]:
                r.search(q, k=10)  # warm-up
            lat = {"hybrid": [], "bm25": [], "dense": []}
            for _ in range(args.rounds):
                for q in queries:
                    for mode in lat:
                        t = time.perf_counter()
                        r.search(q, k=10, mode=mode)
                        lat[mode].append((time.perf_counter() - t) * 1000)
            print(f"\n{n} chunks ({meta['faiss']}): index build {build_s:.1f} s")
            for mode, v in lat.items():
                print(f"  {mode:6} query latency p50 {pct(v, 50):6.2f} ms  p95 {pct(v, 95):6.2f} ms  "
                      f"({len(v)} queries)")

            # BM25 engines on identical tokens
            from rank_bm25 import BM25Okapi

            docs = r.tokenizer.batch(c["text"] for c in chunks)
            qtok = [r.tokenizer(q) for q in queries]
            t = time.perf_counter()
            ours = BM25Index.build(docs, 1.2, 0.75, "robertson")
            t_ours = time.perf_counter() - t
            t = time.perf_counter()
            theirs = BM25Okapi(docs, k1=1.2, b=0.75)
            t_theirs = time.perf_counter() - t
            t = time.perf_counter()
            s_ours = [ours.scores(q) for q in qtok]
            q_ours = (time.perf_counter() - t) / len(qtok) * 1000
            t = time.perf_counter()
            s_theirs = [theirs.get_scores(q) for q in qtok]
            q_theirs = (time.perf_counter() - t) / len(qtok) * 1000
            agree = np.mean([np.argmax(a) == np.argmax(b) for a, b in zip(s_ours, s_theirs) if b.max() > 0])
            print(f"  BM25 build: bm25s {t_ours:.2f} s vs rank-bm25 {t_theirs:.2f} s "
                  f"(ratio {t_theirs / t_ours:.1f}x)")
            print(f"  BM25 score all docs per query: bm25s {q_ours:.2f} ms vs rank-bm25 {q_theirs:.2f} ms "
                  f"(ratio {q_theirs / q_ours:.1f}x); same top-1 on {agree:.0%} of queries")


if __name__ == "__main__":
    main()
