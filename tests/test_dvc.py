"""The project's dvc.yaml, checked without running it: each stage declares exactly the code it
imports and every param key it reads, and a param change reaches exactly its downstream stages.
test_pipeline_dvc.py runs the pipeline itself."""

import ast
from pathlib import Path

import pytest
import yaml


def _leaves(cls, prefix):
    import dataclasses

    out = []
    for f in dataclasses.fields(cls):
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
    from fsku.distill.config import TeacherLogitsConfig, TrainConfig
    from fsku.distill.sft import SftConfig
    from fsku.gen.config import GenConfig, PromptsConfig
    from fsku.gen.pairs import PairsConfig
    from fsku.predict.config import EvalConfig, PredictConfig
    from fsku.quantize import QuantConfig

    # keys a stage reads but by design does not track: sharding never changes the final out, and
    # each generation stage ignores the other model's sampling
    untracked = {"teacher_gen": {"gen.shards", "gen.shard_index", "gen.student."},
                 "student_gen": {"gen.shards", "gen.shard_index", "gen.teacher.", "gen.teacher_system",
                                 "gen.teacher_mcq"}}
    for stage, (section, cls) in {"chunk": ("chunk", ChunkConfig), "encoder": ("encoder", EncoderConfig),
                                  "index": ("index", IndexConfig), "teacher_model": ("teacher", TeacherConfig),
                                  "student_model": ("student", StudentConfig),
                                  "prompts": ("prompts", PromptsConfig), "teacher_gen": ("gen", GenConfig),
                                  "student_gen": ("gen", GenConfig), "pairs": ("pairs", PairsConfig),
                                  "sft": ("sft", SftConfig), "teacher_logits": ("teacher_logits", TeacherLogitsConfig),
                                  "distill": ("train", TrainConfig), "quantize": ("quant", QuantConfig),
                                  "eval_teacher": ("eval", EvalConfig), "eval_row": ("eval", EvalConfig),
                                  "evaluate": ("eval", EvalConfig), "predict": ("predict", PredictConfig)}.items():
        tracked = stages[stage].get("do", stages[stage])["params"]
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
    # sft also reads the held-out split of pairs (its test prompts stay unseen)
    assert {"pairs.test_fraction", "pairs.seed"} <= set(stages["sft"]["params"])


# sft trains the student on the teacher's answers: the student's own answers follow the teacher's
EVAL = {"eval_teacher", "eval_row@student", "eval_row@distilled", "eval_row@quantized", "evaluate"}
# a new distilled model: its rows are answered again, the teacher's and the untrained student's stay
FROM_DISTILL = {"distill", "merge", "quantize", "eval_row@distilled", "eval_row@quantized", "evaluate", "predict"}
# new pairs: the teacher's cached distributions over them too (read by distill when cached)
FROM_PAIRS = {"pairs", "teacher_logits"} | FROM_DISTILL
FROM_SFT = {"sft", "student_gen", "gen_report"} | FROM_PAIRS


@pytest.mark.parametrize("param, expected", [
    ("gen.teacher.temperature", {"teacher_gen"} | FROM_SFT),
    ("gen.student.max_tokens", FROM_SFT - {"sft"}),
    ("student.keep_layers", {"student_model", "eval_row@student"} | FROM_SFT),
    ("teacher.model", {"teacher_model", "student_model", "teacher_gen"} | FROM_SFT | EVAL),
    ("pairs.test_fraction", FROM_SFT),  # sft leaves the prompts pairs holds out unseen
    ("pairs.seed", FROM_SFT),
    ("pairs.strategy", FROM_PAIRS),
    ("teacher_logits.top_k", {"teacher_logits"} | FROM_DISTILL),
    ("train.teacher_logits", {"teacher_logits"} | FROM_DISTILL),  # online computes none; cached needs them
    ("train.beta", FROM_DISTILL),  # the training settings never recompute the teacher's logits
    ("sft.steps", FROM_SFT),
    ("sft.lora.enabled", FROM_SFT),
    ("train.lora.r", FROM_DISTILL),
    ("prompts.top_k", {"prompts", "teacher_gen"} | FROM_SFT | EVAL),
    ("chunk.size", {"chunk", "index", "prompts", "teacher_gen"} | FROM_SFT | EVAL),
    ("quant.method", {"quantize", "eval_row@quantized", "evaluate", "predict"}),
    ("eval.mcq_mode", EVAL),
    ("predict.time_budget_s", {"predict"}),
    ("prompts.max_context_chars", {"prompts", "teacher_gen"} | FROM_SFT | EVAL),
    ("gen.max_model_len", {"teacher_gen"} | FROM_SFT | EVAL),
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


def _imports(path: Path, root: Path) -> set[Path]:
    """Project modules a file imports anywhere in it (lazy imports inside functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.split(".")[0] not in ("fsku", "stages"):
                continue
            base = root / Path(*name.split("."))
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    found.add(candidate)
    # a package's __init__ runs on import of any of its modules
    for f in list(found):
        for parent in f.relative_to(root).parents:
            init = root / parent / "__init__.py"
            if parent != Path(".") and init.is_file():
                found.add(init)
    return found


def _closure(entry: Path, root: Path) -> set[Path]:
    todo, seen = [entry], set()
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        todo += list(_imports(f, root) - seen)
    return seen


def test_each_stage_depends_on_exactly_the_code_it_runs(root):
    """The code deps of every stage cover each project file its entry point can import (DVC reruns
    the stage when one changes), and name nothing it never imports (DVC would rerun it for nothing).
    An ``__init__.py`` without imports (a docstring, a version string) does not count."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    problems = []
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # a foreach stage: its template
        module = stage["cmd"].split()[2]
        entry = root / Path(*module.split(".")).with_suffix(".py")
        code = {f for f in _closure(entry, root) if f.name != "__init__.py" or "import " in f.read_text()}
        deps = [root / d for d in stage["deps"] if d.split("/")[0] in ("fsku", "stages")]
        uncovered = sorted(str(f.relative_to(root)) for f in code
                           if not any(f == d or d in f.parents for d in deps))
        unused = sorted(str(d.relative_to(root)) for d in deps if not any(f == d or d in f.parents for f in code))
        if uncovered or unused:
            problems.append(f"{name}: missing {uncovered}, not imported {unused}")
    assert not problems, "\n".join(problems)
