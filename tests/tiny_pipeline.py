"""A complete, tiny copy of the project in a real temp git + DVC repo.

Every stage of the project's own ``dvc.yaml`` runs, on the project's ``params.yaml`` with a few
overrides: 3 corpus documents, random-init Qwen2 models with Qwen2.5's real tokenizer and ChatML
template as teacher (3 layers) and student (2 layers, narrower), as the default's Qwen2.5-Coder
1.5B and 0.5B are, 6 prompts, 2 sft and 2 training steps and a handful of eval and test questions. A full
``dvc repro`` takes
a couple of minutes on 2 cores, so the DVC tests can afford to rerun the real thing."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import yaml

from conftest import ROOT, copy_code, run, tiny_qwen2

DOCS = ["01_electronic_financial_transactions", "06_network_separation", "12_ai_model_risk"]

OVERRIDES = {
    "chunk.size": 300,
    "encoder.pca_dims": 16,
    "encoder.dtype": "float32",
    "index.eval.ks": [1, 5],
    "synth.per_document": 0,  # a random-init teacher writes nothing the gate keeps (tests/test_synth.py)
    "prompts.max_prompts": 6,
    "prompts.top_k": 2,
    "prompts.max_context_chars": 300,
    "prompts.teacher_shots": 1,
    "prompts.shot_context_chars": 100,
    "gen.backend": "transformers",
    "gen.batch_size": 4,
    "gen.max_model_len": 768,
    "gen.teacher.max_tokens": 8,
    "gen.student.max_tokens": 8,
    "pairs.test_fraction": 0.4,  # 2 of the 6 prompts held out (0.2 holds out none of them)
    "sft.steps": 2,
    "sft.max_length": 768,
    "sft.require_format": False,  # the random-init teacher's open answers are not Korean sentences
    "train.max_steps": 2,
    "train.adaptive_alpha": True,  # its anchor must survive a kill: test_pipeline_dvc's resume test
    "train.warm_start_steps": 0,
    "train.save_steps": 1,
    "train.max_length": 768,
    "train.lora.r": 4,
    "train.lora.alpha": 8,
    "quant.latency_tokens": 2,
    "eval.max_tokens": 6,
    "eval.mcq_max_tokens": 6,
    "predict.max_tokens": 6,
    "predict.fast_max_tokens": 4,
}

# every out of the pipeline, cached or not (timing files are left out: they differ on every run)
TIMING = {"data/gen/teacher.stats.json", "data/gen/student.stats.json", "metrics/generation.json",
          "data/predict/predictions.jsonl", "metrics/eval.json", "metrics/predict.json", "metrics/quantize.json",
          "metrics/eval_scores.csv", "metrics/sft.json", "metrics/distill.json", "metrics/teacher_logits.json",
          *(f"metrics/eval/{row}.json" for row in ("teacher", "student", "distilled", "quantized"))}


def dvc(repo: Path, *args: str, check: bool = True, env: dict | None = None):
    return run(["python", "-m", "dvc", *args], cwd=repo, check=check, env=env)


def git(repo: Path, *args: str, check: bool = True):
    return run(["git", *args], cwd=repo, check=check)


def ran(output: str) -> list[str]:
    """Stages a ``dvc repro`` / ``dvc exp run`` output says it ran (not restored, not skipped)."""
    return re.findall(r"Running stage '([^']+)'", output)


def set_params(repo: Path, values: dict) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text(encoding="utf-8"))
    for dotted, value in values.items():
        node = params
        *path, last = dotted.split(".")
        for key in path:
            node = node[key]
        assert last in node, dotted  # overrides only: the stages refuse unknown keys anyway
        node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False), encoding="utf-8")


def out_paths(repo: Path) -> list[str]:
    """Every out declared in dvc.yaml (files, and the files inside out directories)."""
    from dvc.repo import Repo

    files = []
    with Repo(str(repo)) as dvc_repo:  # DVC resolves the ${paths.*} names (paths.yaml)
        declared = [out.def_path for stage in dvc_repo.index.stages for out in stage.outs]
    for out in declared:
        path = repo / out
        if path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file()]
        elif path.exists():
            files.append(path)
    return sorted(str(p.relative_to(repo)) for p in files)


def snapshot(repo: Path, timing: bool = False) -> dict[str, bytes]:
    """Bytes of every out; timing files only when asked (their latency fields change every run)."""
    return {p: (repo / p).read_bytes() for p in out_paths(repo) if timing or p not in TIMING}


def lock_hashes(repo: Path, skip=()) -> dict[tuple[str, str], str]:
    """(stage, path) -> md5 for every dep and out recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {(stage, e["path"]): e.get("md5") for stage, entry in lock.items()
            for e in entry.get("deps", []) + entry.get("outs", []) if e["path"] not in skip}


def _subset_csv(src: Path, dst: Path, keep) -> int:
    with open(src, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        rows = [r for r in reader if keep(r)]
        fields = reader.fieldnames
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(dst, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    return len(rows)


def _first(n_mcq: int, n_open: int):
    counts = {"mcq": 0, "open": 0}

    def keep(row):
        kind = "mcq" if re.fullmatch(r"\d+", row.get("Answer", "1").strip() or "x") else "open"
        limit = n_mcq if kind == "mcq" else n_open
        counts[kind] += 1
        return counts[kind] <= limit
    return keep


def build(repo: Path, tokenizer) -> Path:
    """Create the repo at ``repo`` (git + DVC, code, data subset, params), commit it, and return it.
    The tiny teacher and student are written next to the repo, outside it (``teacher.model`` and
    ``student.model`` name their paths), in bfloat16 as the default's converted models are; widths of
    64 and up for bitsandbytes' nf4 blocks, head_dim 32 for vLLM's CPU attention."""
    import torch

    from fsku.models.load import save_model

    teacher_src, student_src = repo.parent / f"src-teacher-{repo.name}", repo.parent / f"src-student-{repo.name}"
    save_model(tiny_qwen2(layers=3, hidden=96, heads=3, vocab=151936, seed=7).to(torch.bfloat16), tokenizer,
               teacher_src)
    save_model(tiny_qwen2(layers=2, hidden=64, heads=2, vocab=151936, seed=8).to(torch.bfloat16), tokenizer,
               student_src)
    repo.mkdir(parents=True, exist_ok=True)
    git(repo, "init", "-q")
    git(repo, "config", "user.email", "t@example.com")
    git(repo, "config", "user.name", "t")
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    # a local directory remote from the start, as the project has: `dvc exp push` reads the remote
    # from the experiment's own commit
    dvc(repo, "remote", "add", "-d", "store", "../dvc-store")
    local_remote_path(repo)
    copy_code(repo)
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "data/raw/corpus").mkdir(parents=True)
    for d in DOCS:
        shutil.copy(ROOT / f"data/raw/corpus/{d}.pdf", repo / f"data/raw/corpus/{d}.pdf")
    _subset_csv(ROOT / "data/raw/retrieval_queries.csv", repo / "data/raw/retrieval_queries.csv",
                lambda r: r["source"][:-4] in DOCS)
    _subset_csv(ROOT / "data/raw/questions/train.csv", repo / "data/raw/questions/train.csv", _first(8, 4))
    _subset_csv(ROOT / "data/raw/questions/eval.csv", repo / "data/raw/questions/eval.csv", _first(4, 2))
    _subset_csv(ROOT / "data/raw/test.csv", repo / "data/raw/test.csv", _first(6, 0))  # no Answer column
    set_params(repo, {**OVERRIDES, "teacher.model": str(teacher_src), "student.model": str(student_src)})
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "tiny pipeline")
    return repo


def local_remote_path(repo: Path) -> None:
    """What `make setup` does for the project's remote: repeat its relative path in .dvc/config.local.
    `dvc exp push/pull` read an experiment's config from its commit and resolve a relative remote
    path there against the root of the filesystem, not the clone; the local config is read from the
    clone, so its path wins and resolves right."""
    dvc(repo, "remote", "modify", "--local", "store", "url", "../dvc-store")


def commit_repro(repo: Path, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


def metric(repo: Path, path: str, *keys: str):
    node = json.loads((repo / path).read_text())
    for k in keys:
        node = node[k]
    return node
