"""The whole pipeline under DVC, for real: every stage of the project's dvc.yaml runs in a temp git +
DVC repo on the tiny configuration of ``tiny_pipeline.py`` (Qwen2 models, ChatML, as the default).
Checked here: the Gemma smoke route (configs/profiles/gemma-smoke.yaml: a base-model teacher, its
pruned student, the plain-text template, generation on vLLM), applied as a profile, runs end to end
from scratch in a fresh clone at another path, whose knowledge base equals the first run's byte for
byte; a param change reruns
exactly its downstream stages; a killed stage, rerun, ends with the outs of an uninterrupted run;
experiments (run, queued, shown, diffed) share the cache; and artifacts travel through a local
directory remote and an S3-compatible server (moto, on loopback) with the run-cache.

The tests run in file order on one module-scoped repo; each leaves the repo as it found it. The
smoke route runs forced, from scratch, in a fresh clone, in the background, while they do; the last test checks it."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tiny_pipeline import (
    build,
    commit_repro,
    dvc,
    git,
    local_remote_path,
    lock_hashes,
    metric,
    ran,
    set_params,
    snapshot,
)

STAGES = ["chunk", "encoder", "index", "teacher_model", "student_model", "synth", "prompts", "teacher_choices",
          "teacher_gen",
          "sft",
          "student_gen", "gen_report", "pairs", "teacher_logits", "distill", "merge", "quantize", "eval_teacher",
          "eval_row@student", "eval_row@distilled", "eval_row@quantized", "evaluate", "predict"]
# a new distilled model reanswers its own eval rows only: the teacher's and the student's stay
FROM_DISTILL = ["distill", "merge", "quantize", "eval_row@distilled", "eval_row@quantized", "evaluate", "predict"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory, gemma_tokenizer, qwen_tokenizer):
    repo = build(tmp_path_factory.mktemp("pipeline") / "repo", qwen_tokenizer)
    first = dvc(repo, "repro", "--force")
    stages = ran(first.stdout)
    assert sorted(stages) == sorted(STAGES), first.stdout
    order = {s: i for i, s in enumerate(stages)}
    for a, b in [("chunk", "index"), ("encoder", "index"), ("index", "prompts"), ("teacher_model", "student_model"),
                 ("prompts", "teacher_gen"), ("student_model", "sft"), ("teacher_gen", "sft"), ("sft", "student_gen"),
                 ("prompts", "teacher_choices"), ("teacher_choices", "sft"),
                 ("teacher_gen", "pairs"),
                 ("student_gen", "pairs"), ("pairs", "teacher_logits"), ("teacher_logits", "distill"),
                 ("distill", "merge"), ("merge", "quantize"),
                 ("eval_teacher", "eval_row@student"), ("eval_teacher", "eval_row@distilled"),
                 ("quantize", "eval_row@quantized"), ("eval_row@quantized", "evaluate"), ("quantize", "predict")]:
        assert order[a] < order[b], (a, b, stages)
    commit_repro(repo, "first repro")
    # the Gemma smoke route (test_smoke_profile_*) runs in a fresh clone at another path, in the
    # background while the other tests use this repo, on a copy of its cache (hard links; no remote):
    # the knowledge base's chunk and index stages forced there, then the profile and every stage from
    # the models to the submission (the eval stages are the first run's: their code is the same)
    profile = smoke_profile(repo.parent, gemma_tokenizer)
    other = clone(repo, "rerun")
    shutil.copytree(repo / ".dvc/cache", other / ".dvc/cache", copy_function=os.link, dirs_exist_ok=True)
    log = open(repo.parent / "rerun.log", "w+", encoding="utf-8")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    dvc_cmd = f"{sys.executable} -m dvc"
    script = (f"{dvc_cmd} checkout -q && {dvc_cmd} repro --force --single-item chunk index && "
              f"{sys.executable} -m fsku.profile apply {profile} && {dvc_cmd} repro predict")
    _RERUN.update(dir=other, log=log, profile=profile,
                  proc=subprocess.Popen(["bash", "-c", script], cwd=other, env=env, stdout=log,
                                        stderr=subprocess.STDOUT, text=True))
    yield repo
    if _RERUN["proc"].poll() is None:
        _RERUN["proc"].kill()
        _RERUN["proc"].wait()
    log.close()


_RERUN: dict = {}


def smoke_profile(where: Path, tokenizer) -> Path:
    """The project's gemma-smoke profile in miniature: its own file, with a random-init Gemma 3 (the
    real tokenizer) in place of the embedded 270M, pruned to 2 layers, and both generations on
    vLLM's CPU build."""
    from fsku.models.load import save_model

    from conftest import ROOT, tiny_gemma

    teacher_dir = where / "gemma-teacher"
    teacher = tiny_gemma(layers=4, hidden=64, head_dim=32, seed=7)
    teacher.config.max_position_embeddings = 1024  # vLLM refuses a max_model_len (768 here) above it
    save_model(teacher, tokenizer, teacher_dir)
    overlay = yaml.safe_load((ROOT / "configs/profiles/gemma-smoke.yaml").read_text(encoding="utf-8"))
    overlay["teacher"]["model"] = str(teacher_dir)
    overlay["student"]["keep_layers"] = 2
    overlay["gen"]["backend"] = "vllm"
    overlay["gen"]["teacher"]["max_tokens"] = overlay["gen"]["student"]["max_tokens"] = 8
    # the tiny sizes of tiny_pipeline.OVERRIDES where the profile sets its own
    overlay["prompts"]["max_context_chars"] = 300
    overlay["sft"]["steps"] = 2
    profile = where / "gemma-smoke.yaml"
    profile.write_text(yaml.safe_dump(overlay, allow_unicode=True))
    return profile


def restore(repo: Path) -> None:
    """Back to the committed state: params, lock and uncached metrics from git, cached outs from DVC."""
    git(repo, "checkout", "--", ".")
    git(repo, "clean", "-fdq", "metrics")
    dvc(repo, "checkout", "-q", "--force")
    assert json.loads(dvc(repo, "status", "--json").stdout) == {}


def clone(repo: Path, name: str) -> Path:
    dst = repo.parent / name
    git(repo.parent, "clone", "-q", str(repo), str(dst))
    return dst


def test_noop_repro_and_dag(repo):
    assert json.loads(dvc(repo, "status", "--json").stdout) == {}
    assert ran(dvc(repo, "repro").stdout) == []
    dot = dvc(repo, "dag", "--dot").stdout
    for a, b in [("pairs", "distill"), ("merge", "quantize"), ("quantize", "predict"), ("index", "predict")]:
        assert f'"{a}" -> "{b}"' in dot or f"{a} -> {b}" in dot, dot
    assert (repo / "submission.csv").read_text(encoding="utf-8").startswith("ID,Answer")


def test_evaluate_and_predict_outs(repo):
    """What the last two stages wrote: every row scored with the FSKU metric, the model-only part
    consistent with the per-question records, the plot data, and a valid submission."""
    m = json.loads((repo / "metrics/eval.json").read_text())
    assert list(m["rows"]) == ["student", "distilled", "quantized", "teacher"]
    assert m["similarity_model"] == "char-bigram"
    assert len(m["baselines"]) == 6 and m["best_baseline"]["total"] is not None
    preds = [json.loads(x) for x in (repo / "data/eval/predictions.jsonl").read_text().splitlines()]
    for name, row in m["rows"].items():
        assert row["mcq"] == 4 and row["open"] == 2 and set(row["by_domain"]) == {"전자금융거래"}
        assert row["total"] == pytest.approx(0.5 * row["mcq_accuracy"] + 0.5 * row["open_score"], abs=1e-3)
        assert row["latency_p95_s"] >= row["latency_p50_s"] > 0
        mine = [p for p in preds if p["row"] == name]
        assert row["from_context"] == len([p for p in mine if p["source"] == "context"])
        own = [0.0 if p["source"] == "context" else p["score"] for p in mine if p["type"] == "open"]
        assert row["model_only"]["open_score"] == pytest.approx(sum(own) / len(own), abs=1e-4)
        # each row's stage wrote its summary; the report adds the margins over the baselines
        own = json.loads((repo / f"metrics/eval/{name}.json").read_text())
        assert own == {k: v for k, v in row.items() if k != "margin"} | {"model_only": own["model_only"]}
        assert own["model_only"] == {k: v for k, v in row["model_only"].items() if k != "margin"}
        assert ("kl_to_teacher" in own) == (name != "teacher") and own.get("kl_to_teacher", 1) > 0
    plot = (repo / "metrics/eval_scores.csv").read_text().splitlines()
    assert plot[0] == "row,kind,mcq_accuracy,open_score,total,total_model_only" and len(plot) == 1 + 6 + 1 + 4
    assert all(isinstance(row["collapsed"], bool) and "teacher_agreement" in row for row in m["rows"].values())
    rows = (repo / "submission.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "ID,Answer" and len(rows) == 7
    pm = json.loads((repo / "metrics/predict.json").read_text())
    assert pm["questions"] == 6 and isinstance(pm["collapsed"], bool)
    assert pm["breaker"]["state"] == "closed" and not pm["breaker"]["transitions"] and pm["breaker"]["calls"] > 0
    assert sum(pm["mcq_distribution"].values()) == pm["mcq"]


# in the real repo, on its lock: one param per kind of reach (tests/test_dvc.py covers 21 through DVC's graph)
@pytest.mark.parametrize("key, value, expected, direct", [
    ("chunk.size", 250, ["chunk", "index", "synth", "prompts", "teacher_choices", "teacher_gen", "sft", "student_gen",
                         "gen_report", "pairs", "teacher_logits", *FROM_DISTILL, "eval_teacher",
                         "eval_row@student"], 1),
    ("train.beta", 0.2, FROM_DISTILL, 1),
    ("quant.method", "int8", ["quantize", "eval_row@quantized", "evaluate", "predict"], 1),
    ("eval.mcq_mode", "option_pmi", ["eval_teacher", "eval_row@student", "eval_row@distilled", "eval_row@quantized",
                                     "evaluate"], 5),  # each eval stage tracks it
])
def test_param_change_names_exactly_its_downstream_stages(repo, key, value, expected, direct):
    """`dvc status` names the stages whose param changed; a dry run lists them and what follows."""
    try:
        set_params(repo, {key: value})
        status = json.loads(dvc(repo, "status", "--json").stdout)
        assert sorted(status) == sorted(expected[:direct]), status
        for stage in expected[:direct]:
            [changed] = status[stage][0]["changed deps"]["params.yaml"]  # a whole section shows by name
            assert key == changed or key.startswith(changed + "."), status
        dry = dvc(repo, "repro", "--dry", "--force-downstream")
        stages = ran(dry.stdout)
        assert stages[0] == expected[0] and sorted(stages) == sorted(expected), dry.stdout
    finally:
        restore(repo)


def test_bad_param_fails_the_stage_and_checkout_restores_its_outs(repo):
    before = snapshot(repo)
    set_params(repo, {"quant.method": "bogus"})
    try:
        proc = dvc(repo, "repro", check=False)
        assert proc.returncode != 0
        assert "quant.method: 'bogus' is not one of" in proc.stderr + proc.stdout
        assert ran(proc.stdout) == ["quantize"]  # nothing downstream ran on a failed stage
    finally:
        restore(repo)  # DVC removed quantize's outs before running it: the last good ones come back
    assert snapshot(repo) == before


def test_killed_stage_resumes_to_the_outs_of_an_uninterrupted_run(repo):
    before = snapshot(repo)
    summary = json.loads((repo / "metrics/distill.json").read_text())
    ckpt = repo / "data/distill_ckpt"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = repo.parent / "killed.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dvc", "repro", "--force", "--single-item", "distill"],
                                cwd=repo, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 240
    while not (ckpt / "checkpoint-1" / "trainer_state.json").exists():
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (repo / "models/distilled").exists()  # DVC cleared the out before running the stage
    assert "anchors" in json.loads((ckpt / "distill_state.json").read_text())  # set on step 1
    try:
        # a plain rerun needs no training: the lock's outs come back from the cache
        assert ran(dvc(repo, "repro").stdout) == []
        assert snapshot(repo) == before
        # run again (forced, as after a code change that keeps the result): it resumes from the
        # killed run's checkpoint and writes the outs of the uninterrupted run
        again = dvc(repo, "repro", "--force", "--single-item", "distill")
        assert ran(again.stdout) == ["distill"] and "resuming from data/distill_ckpt/checkpoint-1" in again.stderr
        # adaptive alpha's anchor (first batch) came back from the checkpoint too, or the adapter would differ
        assert metric(repo, "metrics/distill.json", "resumed_from_step") == 1
        after = snapshot(repo)
        resumed = json.loads((repo / "metrics/distill.json").read_text())  # a timing file: not in the snapshot
        cost = {"train_s": 0, "peak_memory_mb": 0}
        assert {**resumed, "resumed_from_step": 0, **cost} == {**summary, **cost}
        assert after == before
        assert not ckpt.exists()
        assert ran(dvc(repo, "repro").stdout) == []  # same adapter: merge and what follows stay
    finally:
        restore(repo)


def test_queued_experiments_run_show_diff_and_share_the_cache(repo):
    """A queued experiment runs in a temp copy of the repo that shares its cache and run-cache. On the
    latest param there is (predict's answer length: the shortest rerun; test_param_change_* and
    test_dvc.py cover earlier params and what they reach), the experiment runs its stage, and a
    direct `dvc exp run` of the same param afterwards runs none (from the run-cache the queued run
    filled)."""
    dvc(repo, "exp", "run", "--queue", "-n", "shorter", "-S", "predict.max_tokens=5")
    dvc(repo, "queue", "start", "-j", "1")
    deadline = time.time() + 420
    while True:
        status = dvc(repo, "queue", "status").stdout
        if "Queued" not in status and "Running" not in status:
            break
        assert time.time() < deadline, status
        time.sleep(2)
    assert status.count("Success") == 1, status
    shown = json.loads(dvc(repo, "exp", "show", "--json").stdout)
    names = [r["name"] for rev in shown for exp in rev.get("experiments") or [] for r in exp.get("revs") or []]
    assert names == ["shorter"], json.dumps(shown)[:2000]
    assert ran(dvc(repo, "queue", "logs", "shorter").stdout) == ["predict"]
    text = json.dumps(shown)
    assert "metrics/eval.json" in text and "metrics/predict.json" in text
    # the experiment is a commit of its own, visible to every diff command
    diff = json.loads(dvc(repo, "exp", "diff", "HEAD", "shorter", "--json").stdout)
    changed = diff["params"]["params.yaml"]["predict.max_tokens"]
    assert {k: changed[k] for k in ("old", "new")} == {"old": 6, "new": 5}
    assert "total_s" in diff["metrics"]["metrics/predict.json"], diff["metrics"]  # predict ran again
    metrics = json.loads(dvc(repo, "metrics", "diff", "HEAD", "shorter", "--json").stdout)
    assert "total_s" in metrics["metrics/predict.json"], metrics
    plots = json.loads(dvc(repo, "plots", "diff", "--json", "--split", "HEAD", "shorter").stdout)["data"]
    assert {"eval_scores", "distill_loss", "distill_kl", "recall_at_k"} <= set(plots), list(plots)
    assert json.loads(dvc(repo, "status", "--json").stdout) == {}  # the workspace is untouched
    try:
        direct = dvc(repo, "exp", "run", "-n", "shorter-again", "-S", "predict.max_tokens=5")
        assert ran(direct.stdout) == [], direct.stdout
        assert json.loads(dvc(repo, "params", "diff", "--json").stdout)["params.yaml"]["predict.max_tokens"]["new"] == 5
    finally:
        restore(repo)


@pytest.fixture
def s3_server():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _push_pull(repo: Path, remote: str, setup: list[list[str]], local: list[list[str]], name: str,
               target: str | None = None) -> Path:
    """Configure ``remote`` as the default (settings in .dvc/config, secrets in .dvc/config.local),
    push outs and run-cache, then restore them in a fresh clone (empty cache and workspace) with
    `dvc repro --pull`, which must run nothing: every stage, or ``target`` and the stages above it."""
    for args in setup:
        dvc(repo, "remote", *args)
    for args in local:
        dvc(repo, "remote", "modify", "--local", *args)
    if setup:
        git(repo, "add", ".dvc/config")
        git(repo, "commit", "-qm", f"remote {remote}")
    assert "secret" not in git(repo, "show", "HEAD:.dvc/config").stdout
    scope = [target, "--with-deps"] if target else []
    dvc(repo, "push", "-r", remote, "--run-cache", *scope)
    fresh = clone(repo, name)
    assert not (fresh / ".dvc/cache").exists() and not (fresh / "models/teacher").exists()
    for args in local:
        dvc(fresh, "remote", "modify", "--local", *args)
    pulled = dvc(fresh, "repro", "--pull", *scope[:1])
    assert ran(pulled.stdout) == [], pulled.stdout
    got, want = snapshot(fresh), snapshot(repo)
    if target:  # only what the pulled stages wrote is there
        want = {p: b for p, b in want.items() if p in got}
        assert want and not (fresh / "models/teacher").exists()
    assert got == want
    assert json.loads(dvc(fresh, "status", "--json", *scope).stdout) == {}
    return fresh


def test_local_directory_remote_round_trip(repo):
    # the fixture's repo has it from its first commit: ../dvc-store, next to the repo and its clones
    fresh = _push_pull(repo, "store", [], [], "from-local-remote")
    store = repo.parent / "dvc-store"
    assert (store / "files/md5").is_dir() and any((store / "runs").iterdir())
    # `dvc push` sends what the workspace uses; an experiment's outs go with `dvc exp push`, which
    # also sends its git ref to a git remote. A teammate's clone then pulls the experiment and
    # applies it: every out of the experiment's lock is there, and nothing needs to run
    origin = repo.parent / "origin.git"
    git(repo.parent, "init", "-q", "--bare", str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    git(repo, "push", "-q", "origin", "HEAD")
    dvc(repo, "exp", "push", "origin", "shorter")
    exp_lock = yaml.safe_load(git(repo, "show", f"{_exp_ref(repo, 'shorter')}:dvc.lock").stdout)["stages"]
    for out in exp_lock["predict"]["outs"]:
        if out["path"] != "metrics/predict.json":  # uncached: it travels in the experiment's commit
            md5 = out["md5"]
            assert (store / "files/md5" / md5[:2] / md5[2:]).is_file(), out
    git(fresh, "remote", "add", "team", str(origin))
    local_remote_path(fresh)
    dvc(fresh, "exp", "pull", "team", "shorter")
    dvc(fresh, "exp", "apply", "shorter")
    assert yaml.safe_load((fresh / "params.yaml").read_text())["predict"]["max_tokens"] == 5
    assert json.loads(dvc(fresh, "status", "--json").stdout) == {}
    assert ran(dvc(fresh, "repro").stdout) == []


def _exp_ref(repo: Path, name: str) -> str:
    refs = git(repo, "for-each-ref", "--format=%(refname)", "refs/exps").stdout.split()
    (ref,) = [r for r in refs if r.endswith("/" + name)]
    return ref


def test_s3_compatible_remote_round_trip(repo, s3_server):
    """The same round trip through an S3-compatible server (moto on loopback), on the knowledge base's
    stages (chunk, encoder, index): the whole pipeline's outs go through the local remote above."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_server, aws_access_key_id="fsku", aws_secret_access_key="fsku-secret",
                      region_name="us-east-1")
    s3.create_bucket(Bucket="fsku-artifacts")
    _push_pull(repo, "s3",
               [["add", "-d", "-f", "s3", "s3://fsku-artifacts/dvc"], ["modify", "s3", "endpointurl", s3_server]],
               [["s3", "access_key_id", "fsku"], ["s3", "secret_access_key", "fsku-secret"]], "from-s3", "index")
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket="fsku-artifacts")
            for o in page.get("Contents", [])]
    assert any(k.startswith("dvc/files/md5/") for k in keys) and any(k.startswith("dvc/runs/") for k in keys), keys[:5]


SMOKE_STAGES = ["chunk", "index", "teacher_model", "student_model", "synth", "prompts", "teacher_choices",
                "teacher_gen",
                "sft", "student_gen",
                "pairs", "teacher_logits", "distill", "merge", "quantize", "predict"]


def test_smoke_profile_gemma_base_model_on_vllm(repo):
    """The gemma-smoke profile (``smoke_profile``), applied in a fresh clone at another path by the
    fixture while the other tests run: every stage from the models to the submission runs on a Gemma
    base model with the plain-text template and a pruned student (generation on vLLM), and the
    submission is valid. The knowledge base's chunk and index stages, forced at this other path, give
    the first run's bytes and lock hashes; no out holds either repo's absolute path. Last in the
    file: it waits for that run."""
    from fsku.gen.format import ZERO_TEMPLATE
    from fsku.questions import load_questions

    proc, log, other = _RERUN["proc"], _RERUN["log"], _RERUN["dir"]
    assert proc.wait(timeout=900) == 0, log.seek(0) or log.read()[-3000:]
    log.seek(0)
    assert sorted(ran(log.read())) == sorted(SMOKE_STAGES)
    assert json.loads(dvc(other, "status", "--json", "predict", "--with-deps").stdout) == {}
    assert yaml.safe_load((other / "params.yaml").read_text())["profile"] == "gemma-smoke"
    for who in ("teacher", "student"):
        stats = json.loads((other / f"data/gen/{who}.stats.json").read_text())
        assert stats["backend"] == "vllm" and stats["backend_fallback"] is None, stats
    models = json.loads((other / "metrics/models.json").read_text())
    assert models["student"] == "prune" and models["kept_layers"] == [0, 3] and models["same_tokenizer"]
    init = json.loads((other / "models/student_init/config.json").read_text())
    assert (init["model_type"], init["num_hidden_layers"], init["dtype"]) == ("gemma3_text", 2, "float32")
    teacher_tok = json.loads((other / "models/teacher/tokenizer_config.json").read_text())
    template = teacher_tok.get("chat_template") or (other / "models/teacher/chat_template.jinja").read_text()
    assert template == ZERO_TEMPLATE
    distill = json.loads((other / "metrics/distill.json").read_text())
    assert distill["steps"] == 2 and distill["kl_before"] > 0 and distill["kl_after"] > 0
    assert metric(other, "metrics/quantize.json", "method") == "nf4"
    teacher = [json.loads(x) for x in (other / "data/gen/teacher.jsonl").read_text().splitlines()]
    assert all("option_scores" in r for r in teacher if r["type"] == "mcq")  # gen.teacher_mcq: option
    rows = list(csv.reader(open(other / "submission.csv", encoding="utf-8", newline="")))
    questions = load_questions(other / "data/raw/test.csv")
    assert rows[0] == ["ID", "Answer"] and [r[0] for r in rows[1:]] == [q.id for q in questions]
    for q, (_, answer) in zip(questions, rows[1:]):
        assert answer.strip() in {str(i) for i in range(1, len(q.options) + 1)} if q.is_mcq else answer.strip()
    # the knowledge base does not depend on the models: built at another path, it is the same bytes
    first, smoke = snapshot(repo), snapshot(other)
    kb = [p for p in first if p.startswith(("data/processed/chunks", "models/index", "metrics/chunk",
                                             "metrics/retrieval"))]
    assert kb and {p: smoke[p] for p in kb} == {p: first[p] for p in kb}
    lock, smoke_lock = lock_hashes(repo), lock_hashes(other)
    assert {k: smoke_lock[k] for k in lock if k[0] in ("chunk", "index")} == \
        {k: v for k, v in lock.items() if k[0] in ("chunk", "index")}
    for outs, where in ((first, repo), (smoke, other)):
        leaks = [p for p, data in outs.items() if str(where).encode() in data]
        assert not leaks, leaks
