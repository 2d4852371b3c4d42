"""Choice distillation (``fsku.distill.choices``, the second phase of ``sft``) and the
``teacher_choices`` stage, on tiny random-init Qwen2 models with Qwen2.5's real tokenizer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest
import torch
import yaml

from fsku.config import ConfigError, load_section
from fsku.distill.choices import (
    answer_position,
    choice_examples,
    choice_loss,
    collate,
    option_logprobs,
    rotate,
    shown_orders,
)
from fsku.distill.pairs import PairsConfig, is_test
from fsku.distill.sft import SftConfig, run_sft
from fsku.gen.backends import TransformersBackend
from fsku.gen.config import GenConfig
from fsku.gen.format import format_prompt
from fsku.io import read_jsonl, write_jsonl

from conftest import ROOT, tiny_qwen2

PAIRS = PairsConfig(test_fraction=0.2, seed=0)
TOPICS = ["접근매체", "비밀번호", "전자서명", "암호화", "망분리", "가명정보", "위탁", "침해사고", "클라우드",
          "내부통제", "이상거래", "본인확인", "개인정보", "신용정보"]


def _prompt(i: int) -> str:
    """Question i: the context names the option the teacher is sure of (i mod 4) + 1, by its text."""
    topic, key = TOPICS[i % len(TOPICS)], "가나다라"[i % 4]
    return (f"다음 참고 자료를 바탕으로 질문에 답하세요.\n\n[참고 자료]\n{topic} 관리 기준 제{i}조: {key}\n\n[질문]\n"
            f"{topic}에 관한 설명으로 옳은 것은?\n1 가\n2 나\n3 다\n4 라\n\n보기 중 정답 번호를 고르세요.")


def _records(n: int) -> list[dict]:
    """Teacher choice records: the teacher sure of option (i mod 4) + 1 for prompt i."""
    out = []
    for i in range(n):
        lps = [-4.0] * 4
        lps[i % 4] = -0.05
        out.append({"prompt_id": f"c{i:03d}", "question_id": f"Q{i}", "prompt": _prompt(i), "logprobs": lps,
                    "choice": i % 4 + 1, "answer": str(i % 4 + 1), "options": ["가", "나", "다", "라"]})
    return out


@pytest.fixture(scope="module")
def student(tmp_path_factory, qwen_tokenizer):
    from fsku.models.load import save_model

    d = tmp_path_factory.mktemp("choices") / "student"
    save_model(tiny_qwen2(layers=2, hidden=32), qwen_tokenizer, d)
    return d


def test_the_answer_position_is_where_eval_scores_the_digit(qwen_tokenizer):
    prompt = format_prompt(qwen_tokenizer, _prompt(3))
    ids, digits = answer_position(qwen_tokenizer, prompt, 5)
    assert qwen_tokenizer.convert_ids_to_tokens(digits) == ["1", "2", "3", "4", "5"]
    for n, d in enumerate(digits, 1):  # the prefix and the digit are exactly "정답: N" tokenised
        assert ids + [d] == qwen_tokenizer(prompt + f"정답: {n}").input_ids


def test_a_tokenizer_that_merges_the_digit_is_refused():
    class Merging:  # "정답: 1" and "정답: 12" style merges: the continuations differ in more than one token
        def __call__(self, text):
            return type("T", (), {"input_ids": [ord(c) for c in text] + ([0] if text.endswith("2") else [])})()

    with pytest.raises(ValueError, match="one digit token"):
        answer_position(Merging(), "질문", 4)


def test_padded_batches_score_as_single_prompts_and_as_the_eval_backend(student, qwen_tokenizer):
    """Left padding with position ids that skip it: each row's option log-probabilities equal the same
    prompt scored alone, and the eval backend's "정답: N" log-probabilities renormalised."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(student, dtype=torch.float32).eval()
    recs = _records(3)
    recs[1]["prompt"] += " 추가 설명이 붙어 더 긴 질문이다." * 3
    recs[2]["logprobs"] = recs[2]["logprobs"] + [-5.0]  # five options
    train, held = choice_examples(recs, qwen_tokenizer, PairsConfig(test_fraction=0.0, seed=0))
    assert len(train) == 3 and not held
    with torch.no_grad():
        batch = option_logprobs(model, collate(train, qwen_tokenizer.pad_token_id))
        alone = [option_logprobs(model, collate([e], qwen_tokenizer.pad_token_id))[0] for e in train]
    backend = TransformersBackend(str(student), GenConfig(backend="transformers"))
    for e, r, row, one in zip(train, recs, batch, alone):
        n = len(e["option_ids"])
        assert torch.allclose(row[:n], one[:n], atol=1e-4), (row, one)
        lp = torch.tensor(backend.continuation_logprobs(
            [format_prompt(qwen_tokenizer, r["prompt"])], [[f"정답: {i}" for i in range(1, n + 1)]])[0])
        assert torch.allclose(row[:n], torch.log_softmax(lp, -1), atol=1e-4)
        assert float(row[n:].abs().sum()) == 0.0  # the padded option slots carry nothing
    with torch.no_grad():
        assert float(choice_loss(model, collate(train, 0))) > 0


def test_rotation_moves_the_options_and_the_target_together():
    prompt, target = rotate(_prompt(2), ["가", "나", "다", "라"], [0.1, 0.2, 0.6, 0.1], 2)
    assert "1 다\n2 라\n3 가\n4 나\n\n보기 중" in prompt and target == [0.6, 0.1, 0.1, 0.2]
    assert prompt.replace("1 다\n2 라\n3 가\n4 나", "") == _prompt(2).replace("1 가\n2 나\n3 다\n4 라", "")
    with pytest.raises(ValueError, match="cannot be rotated"):
        rotate(_prompt(2), ["가", "나", "다", "마"], [0.25] * 4, 1)


def test_rotated_copies_spread_the_teachers_pick_evenly_over_positions(qwen_tokenizer):
    recs = _records(40)
    for r in recs:  # a teacher that prefers "1": a student shown these as is could learn the position
        r["logprobs"] = [-0.1, -3.0, -3.0, -3.0] if int(r["prompt_id"][1:]) % 3 else r["logprobs"]
    orders = shown_orders(recs, 2, seed=0)
    placed = Counter()
    for r in recs:
        pick = max(range(4), key=r["logprobs"].__getitem__)
        first, second = ((pick - s) % 4 for s in orders[r["prompt_id"]])
        assert first != second
        placed.update([first, second])
    assert sorted(placed.values()) == [20, 20, 20, 20]
    pairs = PairsConfig(test_fraction=0.2, seed=0)
    train, held = choice_examples(recs, qwen_tokenizer, pairs, rotations=2)
    plain, held_plain = choice_examples(recs, qwen_tokenizer, pairs)
    assert len(train) == 2 * len(plain) and held == held_plain  # held-out questions stay in their own order
    top = Counter(max(range(4), key=e["target"].__getitem__) for e in train)
    assert max(top.values()) - min(top.values()) <= 2, top
    del recs[0]["options"]
    with pytest.raises(ValueError, match=r"record 1 \(c000\) has no options"):
        choice_examples(recs, qwen_tokenizer, PairsConfig(test_fraction=0.0, seed=0), rotations=1)


def _sft_params(tmp_path, choices: dict, lora: bool = True):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"sft": {"steps": 0, "choices": choices, "lora": {"enabled": lora}}}))
    return path


def test_choice_phase_moves_the_student_to_the_teacher_and_reruns_byte_identical(student, qwen_tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    recs = _records(24)
    write_jsonl(tmp_path / "teacher_choices.jsonl", recs)
    # full fine-tuning: a tiny random model learns the cue within seconds (LoRA runs in the tests below)
    cfg = load_section(SftConfig, "sft", _sft_params(tmp_path, {"num_train_epochs": 20, "learning_rate": 5e-3,
                                                                "per_device_train_batch_size": 4}, lora=False))
    outs = []
    for i in range(2):
        out = tmp_path / f"out{i}"
        summary = run_sft(cfg, PAIRS, tmp_path / "none.jsonl", tmp_path / "none.jsonl", str(student), out,
                          tmp_path / f"sft{i}.json", tmp_path / "teacher_choices.jsonl")
        outs.append(out)
    held = [r for r in recs if is_test(r["prompt_id"], PAIRS)]
    c = summary["choices"]
    assert summary["steps"] == 0 and c["questions"] == 24 - len(held) and held
    assert c["held_out_before"]["examples"] == len(held)
    assert c["loss_last"] < c["loss_first"], c
    # on the questions it trained on, the student now picks what the teacher picks
    train, _ = choice_examples(recs, qwen_tokenizer, PAIRS)
    for name, d in (("before", student), ("after", outs[0])):
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        with torch.no_grad():
            lq = option_logprobs(model, collate(train, qwen_tokenizer.pad_token_id))
        picks = (lq.argmax(-1) == torch.tensor([max(range(4), key=e["target"].__getitem__) for e in train]))
        if name == "before":
            first = float(picks.float().mean())
        else:
            assert float(picks.float().mean()) > max(0.6, first + 0.2), (first, picks)
    assert json.loads((tmp_path / "sft0.json").read_text())["choices"] == c
    files = sorted(p.name for p in outs[0].iterdir())
    for name in files:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_no_choice_file_or_zero_epochs_leave_the_first_phase_alone(student, tmp_path):
    cfg = load_section(SftConfig, "sft", _sft_params(tmp_path, {"num_train_epochs": 0}))
    write_jsonl(tmp_path / "teacher_choices.jsonl", _records(8))
    summary = run_sft(cfg, PAIRS, tmp_path / "none.jsonl", tmp_path / "none.jsonl", str(student), tmp_path / "out",
                      tmp_path / "sft.json", tmp_path / "teacher_choices.jsonl")
    assert summary["passed_through"] and "choices" not in summary


def test_too_few_questions_name_the_file_and_write_nothing(student, tmp_path):
    write_jsonl(tmp_path / "teacher_choices.jsonl", [r for r in _records(12) if is_test(r["prompt_id"], PAIRS)][:1])
    cfg = load_section(SftConfig, "sft", _sft_params(tmp_path, {"num_train_epochs": 1}))
    with pytest.raises(ValueError, match=r"teacher_choices\.jsonl: 0 training question"):
        run_sft(cfg, PAIRS, tmp_path / "none.jsonl", tmp_path / "none.jsonl", str(student), tmp_path / "out",
                tmp_path / "sft.json", tmp_path / "teacher_choices.jsonl")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("choices, key", [({"temperature": 0}, "sft.choices.temperature"),
                                          ({"epochs": 2}, "sft.choices.epochs"),
                                          ({"per_device_train_batch_size": 0},
                                           "sft.choices.per_device_train_batch_size")])
def test_bad_choice_param_names_the_key(tmp_path, choices, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_section(SftConfig, "sft", _sft_params(tmp_path, choices))


def test_teacher_choices_stage_scores_every_prompt_as_eval_does(student, qwen_tokenizer, tmp_path):
    recs = [{"prompt_id": r["prompt_id"], "question_id": r["question_id"], "n_options": 4, "answer": r["answer"],
             "prompt": r["prompt"]} for r in _records(5)]
    write_jsonl(tmp_path / "choice_prompts.jsonl", recs)
    outs = []
    for i, epochs in enumerate([1, 1, 0]):
        params = tmp_path / f"p{i}.yaml"
        params.write_text(yaml.safe_dump({"gen": {}, "sft": {"choices": {"num_train_epochs": epochs}}}))
        argv = [sys.executable, "-m", "stages.teacher_choices", "--params", str(params),
                "--prompts", str(tmp_path / "choice_prompts.jsonl"), "--teacher", str(student),
                "--out", str(tmp_path / f"tc{i}.jsonl"), "--metrics", str(tmp_path / f"tc{i}.json")]
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append((tmp_path / f"tc{i}.jsonl").read_bytes())
    assert outs[0] == outs[1]
    assert outs[2] == b"" and json.loads((tmp_path / "tc2.json").read_text())["questions"] == 0  # the phase off
    got = read_jsonl(tmp_path / "tc0.jsonl")
    backend = TransformersBackend(str(student), GenConfig(backend="transformers"))
    for r, g in zip(recs, got):
        lp = backend.continuation_logprobs([format_prompt(qwen_tokenizer, r["prompt"])],
                                           [[f"정답: {i}" for i in range(1, 5)]])[0]
        assert g["prompt_id"] == r["prompt_id"] and g["choice"] == max(range(4), key=lp.__getitem__) + 1
        assert g["logprobs"] == pytest.approx(lp, abs=1e-3)
    m = json.loads((tmp_path / "tc0.json").read_text())
    assert m["questions"] == 5 and sum(m["choices"].values()) == 5 and 0 <= m["accuracy"] <= 1
