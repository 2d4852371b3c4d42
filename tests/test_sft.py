"""Stage `sft`: the initial student fine-tuned on the teacher's in-format answers through TRL's
SFTTrainer, on a tiny random-init Gemma 3 with the real tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from fsku.config import ConfigError, load_section
from fsku.distill.pairs import PairsConfig, is_test
from fsku.distill.sft import SftConfig, build_trainer, run_sft, score_completions_only, select_examples
from fsku.gen.format import format_prompt
from fsku.io import write_jsonl

from conftest import ROOT, tiny_gemma

PAIRS = PairsConfig(test_fraction=0.2, seed=0)
CONTEXT = "[참고] 전자금융거래법에 따라 금융회사는 접근매체의 위조나 변조로 발생한 사고에 대해 책임을 진다."


def _ids(test: bool, n: int) -> list[str]:
    """n prompt ids that pairs does (test=True) or does not hold out as test pairs."""
    out, i = [], 0
    while len(out) < n:
        pid = f"p{i:03d}"
        if is_test(pid, PAIRS) == test:
            out.append(pid)
        i += 1
    return out


def _rec(pid: str, kind: str, text: str) -> dict:
    prompt = f"{CONTEXT}\n\n질문 {pid}: 전자금융거래에서 이용자 보호를 위한 조치는?"
    if kind == "mcq":
        prompt += "\n1 암호화\n2 접근통제\n3 방치\n4 공개"
    return {"prompt_id": pid, "question_id": f"Q{pid}", "type": kind, "prompt": prompt, "text": text}


GOOD = [("mcq", "정답: 2 접근통제로 권한 없는 접근을 막는다."), ("open", "금융회사는 이용자의 손해를 배상해야 한다."),
        ("mcq", "1 암호화가 기본 보호 조치이다."), ("open", "접근매체 분실 시 즉시 금융회사에 신고해야 한다."),
        ("mcq", "정답: 2"), ("open", "전자금융사고 책임은 원칙적으로 금융회사에 있다.")]
BAD = [("mcq", "\"정답: 번호\" 형식으로 답한 뒤 이유를 설명하세요."), ("mcq", "정답: 7 없는 번호"),
       ("open", ". . . . ."),
       ("open", "no korean here")]


@pytest.fixture(scope="module")
def data(tmp_path_factory, gemma_tokenizer):
    """A student dir, teacher answers (in format, out of format, and to held-out prompts) and prompts."""
    from fsku.models.load import save_model

    tmp = tmp_path_factory.mktemp("sft")
    save_model(tiny_gemma(layers=2), gemma_tokenizer, tmp / "student")
    train_ids, test_ids = _ids(False, len(GOOD) + len(BAD)), _ids(True, 2)
    records = [_rec(pid, k, t) for pid, (k, t) in zip(train_ids, GOOD + BAD)]
    records += [_rec(test_ids[0], "mcq", "정답: 3 방치는 보호 조치가 아니다."),
                _rec(test_ids[1], "open", "본인 확인 절차를 거친다.")]
    write_jsonl(tmp / "teacher.jsonl", records)
    write_jsonl(tmp / "prompts.jsonl", [{"prompt_id": r["prompt_id"], "n_options": 4 if r["type"] == "mcq" else 0}
                                        for r in records])
    return {"dir": tmp, "records": records, "train_ids": train_ids, "test_ids": test_ids}


def _n_options(data) -> dict:
    return {r["prompt_id"]: 4 if r["type"] == "mcq" else 0 for r in data["records"]}


def test_select_keeps_in_format_answers_outside_the_test_pairs(data, gemma_tokenizer):
    train, held_out, dropped = select_examples(data["records"], _n_options(data), PAIRS, gemma_tokenizer)
    assert [e["completion"] for e in train] == [t for _, t in GOOD]
    assert {e["prompt_id"] for e in held_out} == set(data["test_ids"])
    assert not {e["prompt_id"] for e in train} & set(data["test_ids"])
    assert dropped == {"format_no_leading_choice": 2, "format_punctuation": 1, "format_no_hangul": 1, "test_prompt": 2}
    # the student's prompt, exactly as at generation time: no teacher-only system prompt
    rec = data["records"][0]
    assert train[0]["prompt"] == format_prompt(gemma_tokenizer, rec["prompt"]) and rec["prompt"] in train[0]["prompt"]
    # with the format filter off, only empty answers go
    train_all, _, dropped_all = select_examples(data["records"], _n_options(data), PAIRS, gemma_tokenizer,
                                                require_format=False)
    assert len(train_all) == len(GOOD) + len(BAD) and dropped_all == {"test_prompt": 2}


def test_select_drops_open_answers_that_echo_the_question_or_are_too_short(data, gemma_tokenizer):
    """Given each prompt's question (as run_sft reads it from prompts.jsonl), an open answer that
    repeats the question, or is too short to explain anything, is not taught to the student."""
    question = "전자금융거래에서 접근매체를 분실한 이용자가 해야 할 신고 절차를 설명하세요."
    ids = _ids(False, 3)
    recs = [_rec(ids[0], "open", question), _rec(ids[1], "open", "[질문]"),
            _rec(ids[2], "open", "접근매체 분실 시 즉시 금융회사에 신고해야 한다.")]
    train, _, dropped = select_examples(recs, {}, PAIRS, gemma_tokenizer, questions={i: question for i in ids})
    assert [e["prompt_id"] for e in train] == [ids[2]]
    assert dropped == {"format_echo": 1, "format_too_short": 1}
    train, _, _ = select_examples(recs, {}, PAIRS, gemma_tokenizer)  # without the questions: format alone
    assert [e["prompt_id"] for e in train] == ids


def test_prompt_tokens_carry_no_loss_and_completions_end_with_eos(data, gemma_tokenizer, tmp_path):
    """TRL's prompt-completion tokenisation: the prompt tokens are those generation feeds the model,
    labelled -100; the completion is the answer followed by the tokenizer's EOS, all labelled."""
    from fsku.models.load import load_causal_lm

    train, held_out, _ = select_examples(data["records"], _n_options(data), PAIRS, gemma_tokenizer)
    model, _ = load_causal_lm(str(data["dir"] / "student"))
    trainer = build_trainer(SftConfig(steps=1), model, gemma_tokenizer, train, str(tmp_path))
    eos = gemma_tokenizer.eos_token_id
    assert eos is not None
    rows = list(trainer.train_dataset)
    assert len(rows) == len(train)
    for ex, row in zip(train, rows):
        prompt_ids = gemma_tokenizer(ex["prompt"], add_special_tokens=True).input_ids  # as generation tokenises
        ids, labels = row["input_ids"], row["labels"]
        n = len(prompt_ids)
        assert ids[:n] == prompt_ids
        assert all(label == -100 for label in labels[:n])
        assert labels[n:] == ids[n:] and len(ids) > n
        assert ids[-1] == eos and labels[-1] == eos
        assert gemma_tokenizer.decode(ids[n:]) == ex["completion"] + gemma_tokenizer.eos_token
    batch = trainer.data_collator(rows[:3])
    for i, row in enumerate(rows[:3]):  # padding carries no loss either
        labels = batch["labels"][i]
        assert int((labels != -100).sum()) == sum(label != -100 for label in row["labels"])
    # scoring only the labelled positions on CPU gives TRL's loss and gradient exactly
    model.train()
    results = []
    for compact in (False, True):
        model.zero_grad()
        with score_completions_only(compact):
            loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        results.append((float(loss), model.get_output_embeddings().weight.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-5) and results[0][0] > 0
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-4, atol=1e-7)
    assert results[0][1].abs().sum() > 0


def _completion_loss(model, tokenizer, examples) -> float:
    """Mean NLL of answer + EOS tokens given the prompt, computed directly (not through TRL)."""
    total = count = 0.0
    with torch.no_grad():
        for e in examples:
            p = tokenizer(e["prompt"]).input_ids
            c = tokenizer(e["completion"] + tokenizer.eos_token, add_special_tokens=False).input_ids
            logits = model(input_ids=torch.tensor([p + c])).logits[0, len(p) - 1:-1]
            nll = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(c), reduction="sum")
            total += float(nll)
            count += len(c)
    return total / count


def _params(tmp: Path, sft: dict) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text(encoding="utf-8"))
    params["sft"].update(sft)
    params["pairs"].update(test_fraction=PAIRS.test_fraction, seed=PAIRS.seed)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump(params, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("lora", [False, True])
def test_a_few_steps_lower_the_completion_loss_and_rerun_byte_identical(data, gemma_tokenizer, tmp_path, lora):
    from transformers import AutoModelForCausalLM

    cfg = SftConfig(steps=6, learning_rate=3e-2, per_device_train_batch_size=2)
    cfg.lora.enabled = lora
    d = data["dir"]
    outs = []
    for i in range(2):
        out, metrics = tmp_path / f"out{i}", tmp_path / f"sft{i}.json"
        summary = run_sft(cfg, PAIRS, d / "teacher.jsonl", d / "prompts.jsonl", str(d / "student"), out, metrics)
        outs.append(out)
    assert summary["steps"] == 6 and summary["examples"] == len(GOOD) and summary["lora"] is lora
    assert summary["dropped"]["test_prompt"] == 2 and summary["held_out_examples"] == 2
    assert summary["loss_last"] < summary["loss_first"]
    assert json.loads(metrics.read_text()) == summary
    out = outs[0]
    assert not (out / "adapter_config.json").exists() and (out / "model.safetensors").is_file()  # merged
    assert (out / "tokenizer.json").is_file()
    train, _, _ = select_examples(data["records"], _n_options(data), PAIRS, gemma_tokenizer)
    before = _completion_loss(AutoModelForCausalLM.from_pretrained(d / "student"), gemma_tokenizer, train)
    after = _completion_loss(AutoModelForCausalLM.from_pretrained(out), gemma_tokenizer, train)
    # full fine-tuning moves the tiny model's embeddings too; LoRA only its small projections
    assert after < (0.9 * before if not lora else before - 0.02), (before, after)
    # the out keeps the student's config (architecture, EOS for generation) and is deterministic
    for name in ("config.json", "generation_config.json"):
        assert json.loads((out / name).read_text()) == json.loads((d / "student" / name).read_text()), name
    files = sorted(p.name for p in out.iterdir())
    assert files == sorted(p.name for p in outs[1].iterdir())
    for name in files:
        assert (out / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_zero_steps_pass_the_student_through_byte_identical(data, tmp_path):
    d = data["dir"]
    summary = run_sft(SftConfig(steps=0), PAIRS, d / "missing.jsonl", d / "missing.jsonl", str(d / "student"),
                      tmp_path / "out", tmp_path / "sft.json")
    assert summary["steps"] == 0 and summary["passed_through"]
    src = sorted(p.name for p in (d / "student").iterdir())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == src
    for name in src:
        assert (tmp_path / "out" / name).read_bytes() == (d / "student" / name).read_bytes(), name


def test_too_few_usable_answers_names_the_file(data, tmp_path):
    d = data["dir"]
    bad = [_rec(pid, k, t) for pid, (k, t) in zip(data["train_ids"], BAD)] + [_rec(data["train_ids"][-1], *GOOD[1])]
    write_jsonl(tmp_path / "teacher.jsonl", bad)
    with pytest.raises(ValueError, match=r"teacher\.jsonl: 1 usable teacher answer.*at least 2"):
        run_sft(SftConfig(steps=2), PAIRS, tmp_path / "teacher.jsonl", d / "prompts.jsonl", str(d / "student"),
                tmp_path / "out", tmp_path / "sft.json")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sft, key", [({"stepz": 3}, "sft.stepz"), ({"learning_rate": -1.0}, "sft.learning_rate"),
                                      ({"lora": {"enabled": True, "target_modules": []}}, "sft.lora.target_modules"),
                                      ({"lr_scheduler_type": "wsd"}, "sft.lr_scheduler_type")])
def test_bad_param_names_the_key(tmp_path, sft, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_section(SftConfig, "sft", _params(tmp_path, sft))


def test_stage_entry_point_reports_a_bad_param(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "stages.sft", "--params", str(_params(tmp_path, {"stepz": 3}))],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 1 and "error: unknown key sft.stepz" in proc.stderr, proc.stderr
