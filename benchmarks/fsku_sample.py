"""The standing check on real questions: every eval row and every baseline on the FSKU sample
(../shared/fsku-sample: 171 multiple-choice and 36 open-ended questions of the public benchmark),
scored as the `evaluate` stage scores eval.csv, with two knowledge bases:

- ``embedded``: the pipeline's own index (models/index, built from the embedded corpus);
- ``statutes``: an index built the same way (params.yaml's chunk and index sections, the pipeline's
  encoder) from the 33 statutes in ../shared/laws, when that folder is there. The embedded corpus
  does not cover these questions, and retrieved text that misses a question hurts: read this column.

    python benchmarks/fsku_sample.py                      # both columns, every row -> benchmarks/fsku_sample.json
    python benchmarks/fsku_sample.py --columns statutes --rows student distilled
    python benchmarks/fsku_sample.py --model distilled=models/merged-beta0.2 --out /tmp/x.json
    python benchmarks/fsku_sample.py --columns statutes --rows distilled quantized --update  # those rows only

Run after `make run` (it reads models/ and models/encoder). Each column answers every row in its own
child process through `python -m stages.evaluate`, so its rows and baselines have the shape of
metrics/eval.json. The sample is for evaluation only: nothing here trains, prompts or tunes on it.
It exits 0 with a message when ../shared is absent (a user's clone has none).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, machine

SHARED = ROOT.parent / "shared"
SAMPLE = SHARED / "fsku-sample"
LAWS = SHARED / "laws"
ROWS = ["student", "distilled", "quantized", "teacher"]


def statutes_index(params: Path, cache: Path) -> Path:
    """The statutes' index, built once per (params' chunk and index sections, encoder, PDFs) into
    ``cache`` and reused: chunking 741 pages takes minutes."""
    from fsku.chunking.config import ChunkConfig
    from fsku.chunking.pipeline import chunk_corpus
    from fsku.config import load_params, load_section
    from fsku.io import write_jsonl
    from fsku.models.fingerprint import model_fingerprint
    from fsku.retrieval.build import build_index
    from fsku.retrieval.config import IndexConfig
    from fsku.stage import paths

    raw = load_params(params)
    pdfs = sorted(LAWS.glob("*.pdf"))
    key = hashlib.sha256(json.dumps([raw.get("chunk"), raw.get("index"), model_fingerprint(paths()["encoder"]),
                                     [(p.name, p.stat().st_size) for p in pdfs]], sort_keys=True,
                                    default=str).encode()).hexdigest()[:16]
    out = cache / f"statutes-{key}"
    if (out / "index" / "meta.json").is_file():
        return out / "index"
    t = time.perf_counter()
    rows, metrics = chunk_corpus(LAWS, load_section(ChunkConfig, "chunk", params))
    write_jsonl(out / "chunks.jsonl", rows)
    (out / "chunk.json").write_text(json.dumps(metrics, ensure_ascii=False, indent=2), encoding="utf-8")
    build_index(out / "chunks.jsonl", out / "index", load_section(IndexConfig, "index", params))
    print(f"statutes: {metrics.get('documents')} documents, {len(rows)} chunks, index built in "
          f"{time.perf_counter() - t:.0f} s ({out})", flush=True)
    return out / "index"


def column(index: Path, rows: list[str], models: list[str], params: Path) -> dict:
    """Every row and baseline on the sample with this index, as metrics/eval.json shapes them."""
    with tempfile.TemporaryDirectory(prefix="fsku-sample-") as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "stages.evaluate", "--params", str(params),
               "--questions", str(SAMPLE / "mcq.csv"), str(SAMPLE / "open.csv"), "--index", str(index),
               "--rows", *rows, "--metrics", str(out), "--plot", str(Path(tmp) / "plot.csv"),
               "--out", str(Path(tmp) / "predictions.jsonl"),
               *(["--model", *models] if models else [])]
        subprocess.run(cmd, cwd=ROOT, check=True)
        return json.loads(out.read_text(encoding="utf-8"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--columns", nargs="+", choices=["embedded", "statutes"], default=["embedded", "statutes"])
    p.add_argument("--rows", nargs="+", choices=ROWS + ["sft"], default=ROWS)
    p.add_argument("--model", nargs="+", default=[], metavar="ROW=DIR",
                   help="answer a row with another model dir (the distillation study's runs)")
    p.add_argument("--params", default=str(ROOT / "params.yaml"))
    p.add_argument("--cache", default=str(ROOT / ".cache"), help="where the statutes' index is kept")
    p.add_argument("--out", default=str(ROOT / "benchmarks/fsku_sample.json"))
    p.add_argument("--update", action="store_true", help="keep the rows of --out that this run does not "
                   "answer (only right when their models have not changed since)")
    args = p.parse_args()
    if not (SAMPLE / "mcq.csv").is_file():
        print(f"{SAMPLE} is absent: nothing to check (the sample is not part of the project)")
        return
    result: dict = {"machine": machine(),
                    "questions": {"mcq": "../shared/fsku-sample/mcq.csv", "open": "../shared/fsku-sample/open.csv"}}
    out = Path(args.out)
    previous = json.loads(out.read_text(encoding="utf-8")) if args.update and out.is_file() else {}
    result.update({k: v for k, v in previous.items() if k in ("embedded", "statutes") and k not in args.columns})
    for name in args.columns:
        t = time.perf_counter()
        if name == "statutes":
            if not LAWS.is_dir():
                print(f"{LAWS} is absent: no statutes column")
                continue
            index = statutes_index(Path(args.params), Path(args.cache))
        else:
            from fsku.stage import paths

            index = ROOT / paths()["index"]
        result[name] = column(index, args.rows, args.model, Path(args.params))
        result[name]["seconds"] = round(time.perf_counter() - t, 1)
        kept = (previous.get(name) or {}).get("rows") or {}
        result[name]["rows"] = {**{k: v for k, v in kept.items() if k not in args.rows}, **result[name]["rows"]}
        print(summary(name, result[name]), flush=True)
    Path(args.out).write_text(json.dumps(result, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


def summary(name: str, col: dict) -> str:
    lines = [f"[{name}] best baseline total {col['best_baseline']['total']} "
             f"(mcq {col['best_baseline']['mcq']['row']} {col['best_baseline']['mcq']['accuracy']})"]
    for row, s in col["rows"].items():
        lines.append(f"  {row}: total {s['total']} mcq {s['mcq_accuracy']} open {s['open_score']} "
                     f"model-only {s['model_only']['total']} mcq answers {s['mcq_distribution']}"
                     f"{' COLLAPSED' if s['collapsed'] else ''}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
