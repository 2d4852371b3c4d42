"""The distill and merge stages on tiny random-init models (real TRL, PEFT, accelerate, dvclive):
training to the end, resume after a real kill, DDP over gloo, merge, and errors before training."""

import json
import sys

import pytest
import torch
import yaml

from conftest import ROOT, run, tiny_gemma
from fsku.models.load import save_model

QUESTIONS = ["접근매체를 분실한 경우 이용자가 할 일은?", "전자서명 인증서의 유효기간은?", "망분리 예외 대상은?",
             "클라우드 이용 시 중요도 평가 항목은?", "이상거래탐지시스템의 탐지 규칙 점검 주기는?",
             "침해사고 보고 기한은?", "일회용 비밀번호 발생기의 보안 등급은?", "암호키 폐기 절차는?"]


def pair(i, q):
    user = {"role": "user", "content": f"다음 질문에 답하세요.\n\n{q}"}
    return {"prompt_id": f"p{i}", "question_id": f"Q{i}",
            "chosen": [user, {"role": "assistant", "content": f"정답: {i % 4 + 1}. 관련 규정에 따라 즉시 조치한다."}],
            "rejected": [user, {"role": "assistant", "content": f"잘 모르겠습니다 {i} 아마도 그렇다"}]}


@pytest.fixture(scope="module")
def work(tmp_path_factory, gemma_tokenizer):
    d = tmp_path_factory.mktemp("distill")
    save_model(tiny_gemma(layers=3, seed=1), gemma_tokenizer, d / "teacher")
    save_model(tiny_gemma(layers=2, seed=2), gemma_tokenizer, d / "student")
    (d / "pairs").mkdir()
    rows = [pair(i, q) for i, q in enumerate(QUESTIONS)]
    for name, part in (("train", rows[:6]), ("test", rows[6:])):
        (d / "pairs" / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part))
    return d


def params(d, name, **train):
    base = {"max_steps": 6, "save_steps": 2, "batch_size": 2, "learning_rate": 0.05, "warmup_ratio": 0.0,
            "adaptive_alpha": True, "warm_start_steps": 2, "lora": {"r": 4, "alpha": 8}}
    (d / f"{name}.yaml").write_text(yaml.safe_dump({"train": {**base, **train}}))
    return d / f"{name}.yaml"


def distill_cmd(d, name):
    extra = {"num_processes": 2, "batch_size": 1} if name == "ddp" else {}
    return ["-m", "stages.distill", "--params", str(params(d, name, **extra)), "--pairs", str(d / "pairs"),
            "--teacher", str(d / "teacher"), "--student", str(d / "student"), "--out", str(d / name / "model"),
            "--checkpoints", str(d / name / "ckpt"), "--log-dir", str(d / name / "log"),
            "--metrics", str(d / name / "distill.json")]


def files(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained(work):
    run([sys.executable, *distill_cmd(work, "a")], cwd=ROOT)
    return work / "a"


def test_trains_to_the_end_and_logs(trained):
    m = json.loads((trained / "distill.json").read_text())
    assert m["steps"] == 6 and m["train_pairs"] == 6 and m["test_pairs"] == 2 and m["resumed_from_step"] == 0
    assert m["kl_after"] < m["kl_before"] and m["ppl_after"] < m["ppl_before"]
    assert set(m["last_step"]) == {"loss_chosen", "loss_rejected", "kl_chosen", "kl_rejected", "alpha1", "alpha2",
                                   "learning_rate"}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= set(files(trained / "model"))
    cfg = json.loads((trained / "model" / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["base_model_name_or_path"].endswith("student")
    curves = trained / "log" / "plots" / "metrics" / "train"
    for key in ("loss", "loss_chosen", "loss_rejected", "kl_chosen", "kl_rejected", "alpha1", "alpha2",
                "learning_rate"):
        rows = (curves / f"{key}.tsv").read_text().splitlines()
        assert rows[0] == f"step\t{key}" and len(rows) == 7, key
    warm = [float(r.split("\t")[1]) for r in (curves / "warm_start.tsv").read_text().splitlines()[1:]]
    assert warm == [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # the first 2 steps on the warm-start loss (fkl: no skew)
    alphas = [float(r.split("\t")[1]) for r in (curves / "alpha1.tsv").read_text().splitlines()[1:]]
    assert alphas[:2] == [0.0, 0.0] and all(0.01 - 1e-6 <= a <= 0.1 + 1e-6 for a in alphas[2:])  # adaptive
    assert not (trained / "ckpt").exists()  # checkpoints are cleared once the out is written


def test_merge_matches_the_adapter(work, trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run([sys.executable, "-m", "stages.merge", "--model", str(trained / "model"), "--out", str(work / "merged")],
        cwd=ROOT)
    assert not (work / "merged" / "adapter_config.json").exists()
    x = torch.randint(0, 1000, (2, 12))
    adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(str(work / "student")),
                                        str(trained / "model")).eval()
    merged = AutoModelForCausalLM.from_pretrained(str(work / "merged")).eval()
    base = AutoModelForCausalLM.from_pretrained(str(work / "student")).eval()
    with torch.no_grad():
        a, m, b = adapter(x).logits, merged(x).logits, base(x).logits
    assert torch.allclose(a, m, atol=1e-4) and not torch.allclose(a, b, atol=1e-3)
    # a full model passes through unchanged
    run([sys.executable, "-m", "stages.merge", "--model", str(work / "student"), "--out", str(work / "full")],
        cwd=ROOT)
    assert files(work / "full") == files(work / "student")


def test_ddp_two_cpu_processes(work):
    """train.num_processes: 2 makes the stage relaunch itself under accelerate launch (DDP over gloo)."""
    run([sys.executable, *distill_cmd(work, "ddp")], cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    m = json.loads((work / "ddp" / "distill.json").read_text())
    assert m["steps"] == 6 and m["kl_after"] < m["kl_before"] and m["train_pairs"] == 6


@pytest.mark.parametrize("change, message", [
    ({"train_rows": 1}, "1 pair(s); distillation needs at least 2"),
    ({"max_length": 20}, "leave no answer tokens within train.max_length 20"),
    ({"beta": 2.5}, "train.beta"),
    ({"other_tokenizer": True}, "tokenizers differ"),
])
def test_bad_input_stops_before_training(work, tmp_path, monkeypatch, change, message):
    d = tmp_path
    (d / "pairs").mkdir()
    rows = (work / "pairs" / "train.jsonl").read_text().splitlines(keepends=True)
    (d / "pairs" / "train.jsonl").write_text("".join(rows[:change.get("train_rows", 6)]))
    (d / "pairs" / "test.jsonl").write_text((work / "pairs" / "test.jsonl").read_text())
    for m in ("teacher", "student"):
        (d / m).symlink_to(work / m)
    if change.get("other_tokenizer"):
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(work / "teacher"))
        tok.add_tokens(["<새토큰>"])
        (d / "teacher").unlink()
        save_model(tiny_gemma(layers=3, seed=1), tok, d / "teacher")
    extra = {k: v for k, v in change.items() if k in ("max_length", "beta")}
    cmd = distill_cmd(d, "bad")
    if extra:
        (d / "p.yaml").write_text(yaml.safe_dump({"train": {"max_steps": 2, **extra}}))
        cmd[cmd.index("--params") + 1] = str(d / "p.yaml")
    # in-process (the stage's main, without the wrapper that turns the error into exit 1): no
    # interpreter start-up per case
    from stages.distill import main

    monkeypatch.setattr(sys, "argv", ["stages.distill", *cmd[2:]])
    with pytest.raises(ValueError) as e:
        main()
    assert message in str(e.value), str(e.value)
    assert not (d / "bad" / "ckpt").exists() or not any((d / "bad" / "ckpt").glob("checkpoint-*"))


def test_shipped_accelerate_configs_load():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {n: str(load_config_from_file(str(ROOT / f"configs/accelerate/{n}.yaml")).distributed_type)
             for n in ("ddp", "deepspeed_zero2", "fsdp")}
    assert kinds == {"ddp": "DistributedType.MULTI_GPU", "deepspeed_zero2": "DistributedType.DEEPSPEED",
                     "fsdp": "DistributedType.FSDP"}
