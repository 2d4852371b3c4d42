"""The project's dvc.yaml, checked without running it: each stage declares exactly the code it
imports and every param key it reads, and a param change reaches exactly its downstream stages.
test_pipeline_dvc.py runs the pipeline itself."""

import ast
from pathlib import Path

import pytest
import yaml


def _loads(module: str) -> list[tuple[str, type, tuple | None]]:
    """(section, config class, keys) of every ``load_section`` call in a stage module, its arguments
    evaluated in the module's namespace."""
    import importlib
    import inspect

    mod = importlib.import_module(module)
    out = []
    for node in ast.walk(ast.parse(inspect.getsource(mod))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "load_section":
            args = dict(zip(("cls", "section", "path", "keys"), node.args)) | {k.arg: k.value for k in node.keywords}
            value = lambda n: eval(compile(ast.Expression(n), module, "eval"), vars(mod))  # noqa: E731
            out.append((value(args["section"]), value(args["cls"]), value(args["keys"]) if "keys" in args else None))
    return out


def _under(keys, prefixes) -> set[str]:
    return {k for k in keys if any(k == p or k.startswith(p + ".") for p in prefixes)}


def _param_leaves(node, prefix=""):
    if isinstance(node, dict):
        return [k for key, v in node.items() for k in _param_leaves(v, f"{prefix}.{key}" if prefix else key)]
    return [prefix]


def leaves(cls: type, prefix: str = "") -> list[str]:
    """Every dotted leaf key of a config dataclass (nested configs expanded): what a stage reads."""
    import dataclasses

    out = []
    for f in dataclasses.fields(cls):
        sub = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        key = f"{prefix}.{f.name}" if prefix else f.name
        out += leaves(type(sub), key) if dataclasses.is_dataclass(sub) else [key]
    return out


def _tracking_problems(name: str, loads, tracked_params: list[str], params: dict, by_design=()) -> list[str]:
    """What a stage reads but does not track, and what it tracks but never reads: ``loads`` are its
    (section, config class, keys) reads, ``tracked_params`` its dvc.yaml params."""
    read = set()
    for section, cls, keys in loads:
        everything = leaves(cls, section)
        read |= set(everything) if keys is None else _under(everything, [f"{section}.{k}" for k in keys])
    read -= _under(read, by_design)
    tracked = _under(_param_leaves(params), tracked_params)
    problems = []
    if read - tracked:
        problems.append(f"{name} reads but does not track {sorted(read - tracked)}")
    if tracked - read:
        problems.append(f"{name} tracks but never reads {sorted(tracked - read)}")
    return problems


def test_dvc_yaml_tracks_exactly_the_params_each_stage_reads(root):
    """Each stage's params in dvc.yaml are exactly the keys its code loads (``load_section``, with
    its ``keys`` where it reads part of a section): nothing it reads is left untracked (a change
    would not rerun it), and nothing it never reads is tracked (a change would rerun it for
    nothing). No tracked mapping holds a key named size/nfiles (DVC's run-cache key skips those)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    # keys a stage reads but by design does not track: sharding never changes the final out, and
    # each generation stage ignores the other model's sampling
    by_design = {"teacher_gen": {"gen.shards", "gen.shard_index", "gen.student"},
                 "student_gen": {"gen.shards", "gen.shard_index", "gen.teacher", "gen.teacher_system",
                                 "gen.teacher_mcq"}}
    problems, checked = [], []
    for name, stage in stages.items():
        body = stage.get("do", stage)
        loads = _loads(body["cmd"].split()[2])
        problems += _tracking_problems(name, loads, body.get("params", []), params, by_design.get(name, ()))
        for t in body.get("params", []):
            node = params
            for key in t.split("."):
                node = node[key]

            def walk(n):
                if isinstance(n, dict):
                    assert not {"size", "nfiles"} & set(n), (name, t)
                    for v in n.values():
                        walk(v)
            walk(node)
        checked.append(name)
    assert not problems, "\n".join(problems)
    assert len(checked) == len(stages) and "predict" in checked
    # sft also reads the held-out split of pairs (its test prompts stay unseen)
    assert {"pairs.test_fraction", "pairs.seed"} <= set(stages["sft"]["params"])


def test_the_params_check_catches_over_and_under_tracking(root):
    """The check above on made-up stages: one tracking the whole index section while reading only
    the search keys (as prompts did), one reading a section it does not track, and a right one."""
    from fsku.gen.config import PromptsConfig
    from fsku.retrieval.config import SEARCH_KEYS, IndexConfig

    params = yaml.safe_load((root / "params.yaml").read_text())
    search = [("index", IndexConfig, SEARCH_KEYS)]
    over = _tracking_problems("over", search, ["index"], params)
    assert len(over) == 1 and "tracks but never reads" in over[0] and "index.eval.ks" in over[0]
    under = _tracking_problems("under", [*search, ("prompts", PromptsConfig, None)],
                               ["index.dense.nprobe", "index.hybrid", "index.rerank"], params)
    assert len(under) == 1 and "reads but does not track" in under[0] and "prompts.top_k" in under[0]
    assert _tracking_problems("right", search, ["index.dense.nprobe", "index.hybrid", "index.rerank"], params) == []
    assert _loads("stages.prompts")[1] == ("index", IndexConfig, SEARCH_KEYS)


@pytest.mark.parametrize("param, trackers", [
    # only the index stage's retrieval figures read index.eval: a new cut-off reruns that stage alone
    # (its index comes out the same bytes, so nothing downstream of it reruns under dvc repro)
    ("index.eval.ks", {"index"}),
    ("index.bm25.k1", {"index"}),  # shapes the index itself: the rest follows from its new outs
    ("index.hybrid.bm25_weight", {"index", "prompts", "eval_teacher", "eval_row", "evaluate", "predict"}),
    ("index.dense.nprobe", {"index", "prompts", "eval_teacher", "eval_row", "evaluate", "predict"}),
])
def test_stages_that_track_a_retrieval_param(root, param, trackers):
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    got = {name for name, st in stages.items()
           if any(param == t or param.startswith(t + ".") for t in st.get("do", st).get("params", []))}
    assert got == trackers


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
    ("teacher.model", {"teacher_model", "student_model", "synth", "prompts", "teacher_gen", "teacher_choices"}
     | FROM_SFT | EVAL),
    # what the teacher writes reruns from synth on, and nothing before it
    ("synth.per_document", {"synth", "prompts", "teacher_gen", "teacher_choices"} | FROM_SFT),
    ("synth.round_trip", {"synth", "prompts", "teacher_gen", "teacher_choices"} | FROM_SFT),
    ("prompts.source", {"prompts", "teacher_gen", "teacher_choices"} | FROM_SFT),
    ("pairs.test_fraction", FROM_SFT),  # sft leaves the prompts pairs holds out unseen
    ("pairs.seed", FROM_SFT),
    ("pairs.strategy", FROM_PAIRS),
    ("teacher_logits.top_k", {"teacher_logits"} | FROM_DISTILL),
    ("train.teacher_logits", {"teacher_logits"} | FROM_DISTILL),  # online computes none; cached needs them
    ("train.beta", FROM_DISTILL),  # the training settings never recompute the teacher's logits
    ("sft.steps", FROM_SFT),
    ("sft.lora.enabled", FROM_SFT),
    ("sft.choices.num_train_epochs", {"teacher_choices"} | FROM_SFT),  # off: the teacher scores nothing
    ("sft.choices.learning_rate", FROM_SFT),  # the teacher's option distributions are not recomputed
    ("train.lora.r", FROM_DISTILL),
    ("prompts.top_k", {"prompts", "teacher_gen", "teacher_choices"} | FROM_SFT | EVAL),
    ("chunk.size", {"chunk", "index", "synth", "prompts", "teacher_gen", "teacher_choices"} | FROM_SFT | EVAL),
    ("quant.method", {"quantize", "eval_row@quantized", "evaluate", "predict"}),
    ("eval.mcq_mode", EVAL),
    ("predict.time_budget_s", {"predict"}),
    ("prompts.max_context_chars", {"prompts", "teacher_gen", "teacher_choices"} | FROM_SFT | EVAL),
    ("gen.max_model_len", {"synth", "prompts", "teacher_gen", "teacher_choices"} | FROM_SFT | EVAL),
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
    # `python -m stages.x` runs stages/__init__.py first (it pins the CPU kernels)
    inits = [root / parent / "__init__.py" for parent in entry.relative_to(root).parents if parent != Path(".")]
    todo, seen = [entry, *(i for i in inits if i.is_file())], set()
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


def _path_literals(text: str) -> list[str]:
    import re

    return re.findall(r"(?<![\w/.$])(?:data|models|metrics)/[\w./-]+|submission\.csv", text)


def test_each_path_is_written_once(root):
    """paths.yaml names every data, model and metrics path; dvc.yaml writes ``${paths.<name>}`` and
    the stages' options default to ``paths()[<name>]``, so neither repeats a path (a moved out would
    otherwise be moved in one place and still read from the other)."""
    import re

    from fsku.stage import paths

    named = [v for k, v in paths().items() if k != "metrics"] + list(paths()["metrics"].values())
    assert len(named) == len(set(named)), "a path named twice in paths.yaml"
    code = "\n".join(line.split("#")[0] for line in (root / "dvc.yaml").read_text().splitlines())
    assert _path_literals(code) == [], "dvc.yaml: write these as ${paths.<name>}"
    for entry in sorted((root / "stages").glob("*.py")):
        defaults = re.findall(r"default=([^,)]+)", entry.read_text())
        literal = [d for d in defaults if _path_literals(d)]
        assert literal == [], f"{entry.name}: default these to paths()[<name>]"
    assert "data/raw/questions/eval.csv" in (root / "params.yaml").read_text()  # eval.questions: ${eval.questions}


def test_dvc_resolves_every_path_name(root):
    """Each ``${...}`` in dvc.yaml resolves (DVC reads paths.yaml as vars and params.yaml), and every
    name in paths.yaml is used by a stage or the stages' options."""
    from dvc.repo import Repo

    from fsku.stage import paths

    with Repo(str(root)) as repo:
        used = {d.def_path for s in repo.index.stages for d in [*s.deps, *s.outs]}
    text = (root / "dvc.yaml").read_text() + "".join(p.read_text() for p in (root / "stages").glob("*.py"))
    unused = [k for k in [*paths(), *(f"metrics.{m}" for m in paths()["metrics"])]
              if k != "metrics" and f"paths.{k}" not in text and f'P["{k}"]' not in text]
    assert unused == []
    assert "data/eval/rows/teacher.jsonl" in used and "data/raw/questions/eval.csv" in used


def test_packages_reach_only_into_lower_layers(root):
    """Every ``from fsku.<unit>`` in the library (module level or inside a function) goes to a lower
    layer of ``fsku.LAYERS``: no cycle, and no reach sideways that would make a stage depend on code
    it never runs. Every unit of fsku/ has a layer."""
    from fsku import LAYERS

    layer = {u: i for i, units in enumerate(LAYERS) for u in units}
    units = {p.name if p.is_dir() else p.stem for p in (root / "fsku").iterdir()
             if (p.is_dir() and (p / "__init__.py").exists()) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert units == set(layer), f"units without a layer: {sorted(units - set(layer))}"
    wrong = []
    for path in sorted((root / "fsku").rglob("*.py")):
        rel = path.relative_to(root / "fsku").parts
        unit = rel[0] if len(rel) > 1 else path.stem
        if unit == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fsku."):
                target = node.module.split(".")[1]
                if target != unit and layer[target] >= layer[unit]:
                    wrong.append(f"{path.relative_to(root)}:{node.lineno} {unit} -> {target}")
    assert not wrong, "\n".join(wrong)
