"""DVC behaviour in a real temp git + DVC repo with a tiny corpus and config.

The knowledge-base part of the pipeline (chunk, encoder, index) is exercised by targeting `index`;
the model stages are tested on their own in test_models.py."""

import csv
import json
import re
import shutil

import pytest
import yaml

from conftest import ROOT, copy_code, run

DOCS = ["01_electronic_financial_transactions", "06_network_separation", "12_ai_model_risk"]
PARAMS = {
    "chunk": {"size": 300, "overlap": 40, "unit": "chars", "tokenizer": "", "min_chars": 10},
    "encoder": {"pca_dims": 16, "dtype": "float32"},
    "index": {"eval": {"ks": [1, 5]}},
}


def dvc(repo, *args, check=True):
    return run(["python", "-m", "dvc", *args], cwd=repo, check=check)


def ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", output)


def outs(repo) -> dict:
    files = [repo / "data/processed/chunks.jsonl", repo / "metrics/chunk.json", repo / "metrics/retrieval.json",
             repo / "metrics/retrieval_curve.csv", *sorted((repo / "models").rglob("*"))]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files if p.is_file()}


def set_param(repo, dotted: str, value) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    node = params
    *path, last = dotted.split(".")
    for key in path:
        node = node.setdefault(key, {})
    node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("dvcrepo")
    run(["git", "init", "-q"], cwd=repo)
    run(["git", "config", "user.email", "t@example.com"], cwd=repo)
    run(["git", "config", "user.name", "t"], cwd=repo)
    dvc(repo, "init", "-q")
    dvc(repo, "config", "core.analytics", "false")
    copy_code(repo)
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    (repo / "data/raw/corpus").mkdir(parents=True)
    for d in DOCS:
        shutil.copy(ROOT / f"data/raw/corpus/{d}.pdf", repo / f"data/raw/corpus/{d}.pdf")
    with open(ROOT / "data/raw/retrieval_queries.csv", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["source"][:-4] in DOCS]
    with open(repo / "data/raw/retrieval_queries.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, allow_unicode=True, sort_keys=False))
    first = dvc(repo, "repro", "index")
    # chunk and encoder are independent, so DVC may run them in either order.
    stages = ran(first.stdout)
    assert sorted(stages[:2]) == ["chunk", "encoder"] and stages[2:] == ["index"], first.stdout
    run(["git", "add", "-A"], cwd=repo)
    run(["git", "commit", "-qm", "first repro"], cwd=repo)
    return repo


def test_first_repro_outputs(repo):
    m = json.loads((repo / "metrics/retrieval.json").read_text())
    assert m["queries"] >= 15 and set(m) >= {"bm25", "dense", "hybrid"}
    assert json.loads((repo / "metrics/chunk.json").read_text())["documents"] == 3
    show = json.loads(dvc(repo, "metrics", "show", "--json").stdout)
    assert "metrics/retrieval.json" in json.dumps(show)


def test_noop_repro_runs_nothing_and_force_is_byte_identical(repo):
    before = outs(repo)
    again = dvc(repo, "repro", "index")
    assert ran(again.stdout) == []
    assert outs(repo) == before
    forced = dvc(repo, "repro", "--force", "--single-item", "chunk", "index")
    assert ran(forced.stdout) == ["chunk", "index"]
    assert outs(repo) == before
    assert run(["git", "status", "--porcelain", "dvc.lock"], cwd=repo).stdout == ""


def test_chunk_param_reruns_chunk_and_index_only(repo):
    before = outs(repo)
    set_param(repo, "chunk.size", 250)
    try:
        status = json.loads(dvc(repo, "status", "--with-deps", "index", "--json").stdout)
        assert set(status) == {"chunk"}
        assert status["chunk"] == [{"changed deps": {"params.yaml": {"chunk.size": "modified"}}}]
        # a dry run cannot know that chunk's out will change, so it is asked for the descendants
        dry = dvc(repo, "repro", "--dry", "--force-downstream", "index")
        assert ran(dry.stdout) == ["chunk", "index"]
        real = dvc(repo, "repro", "index")
        assert ran(real.stdout) == ["chunk", "index"]
        after = outs(repo)
        assert after["models/encoder/model.safetensors"] == before["models/encoder/model.safetensors"]
        assert after["data/processed/chunks.jsonl"] != before["data/processed/chunks.jsonl"]
        assert max(len(json.loads(x)["text"]) for x in after["data/processed/chunks.jsonl"].splitlines()) <= 250
    finally:
        run(["git", "checkout", "params.yaml", "dvc.lock", "metrics"], cwd=repo)
        dvc(repo, "checkout", "-q", "--with-deps", "index")
    assert outs(repo) == before


def test_index_param_reruns_index_only(repo):
    before = outs(repo)
    set_param(repo, "index.hybrid.bm25_weight", 0.9)
    try:
        assert ran(dvc(repo, "repro", "--dry", "--force-downstream", "index").stdout) == ["index"]
        real = dvc(repo, "repro", "index")
        assert ran(real.stdout) == ["index"]
        after = outs(repo)
        assert after["data/processed/chunks.jsonl"] == before["data/processed/chunks.jsonl"]
        assert after["metrics/retrieval.json"] != before["metrics/retrieval.json"]
    finally:
        run(["git", "checkout", "params.yaml", "dvc.lock", "metrics"], cwd=repo)
        dvc(repo, "checkout", "-q", "--with-deps", "index")
    assert ran(dvc(repo, "repro", "index").stdout) == []
    assert outs(repo) == before


def test_bad_param_fails_the_stage_and_keeps_outs(repo):
    before = outs(repo)
    set_param(repo, "index.hybrid.method", "bogus")
    try:
        proc = dvc(repo, "repro", "index", check=False)
        assert proc.returncode != 0
        assert "index.hybrid.method: 'bogus' is not one of" in proc.stderr + proc.stdout
    finally:
        run(["git", "checkout", "params.yaml"], cwd=repo)
    # DVC clears a stage's outs before running it; the last good ones come back from the cache
    # (and the uncached metrics from git)
    dvc(repo, "checkout", "-q", "--with-deps", "index")
    run(["git", "checkout", "metrics"], cwd=repo)
    assert outs(repo) == before
    assert ran(dvc(repo, "repro", "index").stdout) == []


def _leaves(cls, prefix):
    import dataclasses

    out = []
    for f in dataclasses.fields(cls):
        tp = cls.__dataclass_fields__[f.name].type
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(sub):
            out += _leaves(type(sub), f"{prefix}.{f.name}")
        else:
            out.append(f"{prefix}.{f.name}")
    return out


def test_dvc_yaml_tracks_every_param_of_each_stage(root):
    """Each stage's params in dvc.yaml cover every key its config reads, and no tracked mapping holds
    a key named size/nfiles (DVC's run-cache key skips those names)."""
    from fsku.chunking.config import ChunkConfig
    from fsku.embedding.static import EncoderConfig
    from fsku.models.config import StudentConfig, TeacherConfig
    from fsku.retrieval.config import IndexConfig

    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    from fsku.gen.config import GenConfig, PromptsConfig
    from fsku.distill.config import TrainConfig
    from fsku.gen.pairs import PairsConfig
    from fsku.predict.config import EvalConfig, PredictConfig
    from fsku.quantize import QuantConfig

    # keys a stage reads but by design does not track: sharding never changes the final out, and
    # each generation stage ignores the other model's sampling
    untracked = {"teacher_gen": {"gen.shards", "gen.shard_index", "gen.student."},
                 "student_gen": {"gen.shards", "gen.shard_index", "gen.teacher.", "gen.teacher_system"}}
    for stage, (section, cls) in {"chunk": ("chunk", ChunkConfig), "encoder": ("encoder", EncoderConfig),
                                  "index": ("index", IndexConfig), "teacher_model": ("teacher", TeacherConfig),
                                  "student_model": ("student", StudentConfig),
                                  "prompts": ("prompts", PromptsConfig), "teacher_gen": ("gen", GenConfig),
                                  "student_gen": ("gen", GenConfig), "pairs": ("pairs", PairsConfig),
                                  "distill": ("train", TrainConfig), "quantize": ("quant", QuantConfig),
                                  "evaluate": ("eval", EvalConfig), "predict": ("predict", PredictConfig)}.items():
        tracked = stages[stage]["params"]
        for leaf in _leaves(cls, section):
            if any(leaf == u or leaf.startswith(u) for u in untracked.get(stage, ())):
                continue
            assert section in tracked or leaf in tracked or any(leaf.startswith(t + ".") for t in tracked), leaf
        for t in tracked:
            node = params
            for key in t.split("."):
                node = node[key]

            def walk(n):
                if isinstance(n, dict):
                    assert not {"size", "nfiles"} & set(n), (stage, t)
                    for v in n.values():
                        walk(v)
            walk(node)


@pytest.mark.parametrize("param, expected", [
    ("gen.teacher.temperature", {"teacher_gen", "gen_report", "pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("gen.student.max_tokens", {"student_gen", "gen_report", "pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("student.keep_layers", {"student_model", "student_gen", "gen_report", "pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("teacher.model", {"teacher_model", "student_model", "teacher_gen", "student_gen", "gen_report", "pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("pairs.test_fraction", {"pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("pairs.strategy", {"pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("train.beta", {"distill", "merge", "quantize", "evaluate", "predict"}),
    ("train.lora.r", {"distill", "merge", "quantize", "evaluate", "predict"}),
    ("prompts.top_k", {"prompts", "teacher_gen", "student_gen", "gen_report", "pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("chunk.size", {"chunk", "index", "prompts", "teacher_gen", "student_gen", "gen_report", "pairs", "distill", "merge", "quantize", "evaluate", "predict"}),
    ("quant.method", {"quantize", "evaluate", "predict"}),
    ("eval.mcq_mode", {"evaluate"}),
    ("predict.time_budget_s", {"predict"}),
    ("prompts.max_context_chars", {"prompts", "teacher_gen", "student_gen", "gen_report", "pairs", "distill", "merge",
                                   "quantize", "evaluate", "predict"}),
    ("gen.max_model_len", {"teacher_gen", "student_gen", "gen_report", "pairs", "distill", "merge", "quantize",
                           "evaluate", "predict"}),
    ("gen.shards", set()),  # by design: sharding does not change the final out
])
def test_param_reruns_exactly_its_downstream_stages(root, param, expected):
    """The project's own dvc.yaml, read through DVC's stage graph: which stages a param change
    reruns (the stages tracking the key, and everything downstream of them)."""
    import networkx as nx
    from dvc.repo import Repo

    repo = Repo(str(root))
    graph = repo.index.graph  # edges point from a stage to the stages it depends on
    hit = set()
    for stage in repo.index.stages:
        for dep in stage.deps:
            if dep.__class__.__name__ != "ParamsDependency":
                continue
            if any(param == p or param.startswith(p + ".") for p in dep.params):
                hit.add(stage)
    downstream = set()
    for stage in hit:
        downstream |= {stage, *nx.ancestors(graph, stage)}
    assert {s.addressing for s in downstream} == expected
