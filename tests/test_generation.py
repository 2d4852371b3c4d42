import json
import sys

import pytest

from fsku.config import ConfigError, from_dict
from fsku.distill.pairs import PairsConfig, degenerate_reason, make_pairs
from fsku.gen.backends import TransformersBackend, make_backend
from fsku.gen.config import DedupConfig, GenConfig, PromptsConfig, SamplingConfig
from fsku.gen.format import format_prompt
from fsku.gen.prompts import build_prompts, dedup
from fsku.gen.runner import run_generation
from fsku.gen.shots import SHOTS_INTRO, gold_answer, pick_shots, render_shots
from fsku.models.adapter import tokenizer_source
from fsku.models.fingerprint import model_fingerprint
from fsku.models.load import save_model
from fsku.questions import Question

from conftest import tiny_gemma


def q(i, text, options=()):
    return Question(f"Q{i}", text + "".join(f"\n{k} {o}" for k, o in enumerate(options, 1)), text, list(options))


def test_dedup_removes_near_duplicates():
    qs = [q(1, "전자금융거래에서 접근매체를 분실한 경우 이용자가 하여야 할 조치를 설명하세요."),
          q(2, "전자금융거래에서 접근매체를 분실한 경우 이용자가 하여야 할 조치를 설명하시오."),
          q(3, "클라우드 서비스 제공자의 건전성 평가 항목은 몇 개인가?")]
    kept, dropped = dedup(qs, DedupConfig(threshold=0.7))
    assert [x.id for x in kept] == ["Q1", "Q3"] and dropped == [{"id": "Q2", "duplicate_of": "Q1"}]


def test_build_prompts_carries_context_and_stable_ids():
    chunks = [{"chunk_id": "c1", "source": "a.pdf", "title": "문서", "section": "제1조(목적)", "text": "본문 하나"},
              {"chunk_id": "c2", "source": "b.pdf", "title": "문서2", "section": "", "text": "본문 둘"}]
    qs = [q(1, "옳은 것은?", ["가", "나", "다", "라"]), q(2, "설명하세요.")]
    recs, counts = build_prompts(qs, lambda text, k: chunks[:k], PromptsConfig(top_k=2))
    again, _ = build_prompts(qs, lambda text, k: chunks[:k], PromptsConfig(top_k=2))
    assert [r["prompt_id"] for r in recs] == [r["prompt_id"] for r in again]
    assert recs[0]["type"] == "mcq" and "1 가\n2 나" in recs[0]["prompt"] and "본문 하나" in recs[0]["prompt"]
    assert recs[0]["context_ids"] == ["c1", "c2"] and recs[1]["type"] == "open"
    # option texts are scored under the context and the stem alone (no listed options, no instruction)
    assert "본문 하나" in recs[0]["cloze"] and recs[0]["cloze"].endswith("옳은 것은?")
    assert "1 가" not in recs[0]["cloze"] and "(없음)" in recs[0]["cloze_bare"] and "본문" not in recs[0]["cloze_bare"]
    assert "cloze" not in recs[1]
    assert counts["prompts"] == 2 and counts["mcq"] == 1
    capped, counts = build_prompts(qs * 1, lambda t, k: [], PromptsConfig(top_k=0, max_prompts=1))
    assert len(capped) == 1 and "(없음)" in capped[0]["prompt"]


def test_capped_pool_reserves_a_share_for_open_questions():
    """8 of 40 questions are open-ended: a draw of 10 regardless of kind gets few; open_share 0.5 gets
    5, and asking for more open questions than there are fills the rest with multiple choice."""
    from fsku.gen.prompts import cap

    qs = [q(i, f"질문 {i} 설명하세요.") if i % 5 == 0 else q(i, f"질문 {i} 옳은 것은?", ["가", "나", "다", "라"])
          for i in range(40)]
    for share, n, want_open in ((0.5, 10, 5), (0.9, 10, 8), (0.5, 38, 8), (0.2, 10, 2)):
        got = cap(qs, n, share, seed=0)
        assert len(got) == n == len({x.id for x in got}) and sum(not x.is_mcq for x in got) == want_open
    assert cap(qs, 10, 0.5, 0) == cap(qs, 10, 0.5, 0) != cap(qs, 10, 0.5, 1)
    assert cap(qs, 10, 0.0, 0) == __import__("random").Random(0).sample(qs, 10)  # as before the share existed
    recs, counts = build_prompts(qs, lambda t, k: [], PromptsConfig(top_k=0, max_prompts=10, open_share=0.5))
    assert counts["open"] == 5 and counts["mcq"] == 5


def test_format_prompt_completion_and_chat(gemma_tokenizer):
    assert not gemma_tokenizer.chat_template  # the embedded teacher is a base model
    plain = format_prompt(gemma_tokenizer, "질문", system="지시")
    assert plain.startswith("지시\n\n질문") and plain.endswith("### 답변\n")
    gemma_tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</{{ m['role'] }}>"
                                     "{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")
    try:
        chat = format_prompt(gemma_tokenizer, "질문", system="지시")
        assert chat == "<system>지시</system><user>질문</user><assistant>"
    finally:
        gemma_tokenizer.chat_template = None


def test_zero_template_frames_turns_and_stops_on_the_next_one(gemma_tokenizer, tiny_model_dir, tmp_path):
    """A base model under the zero template: system (worked examples), question, answer header; the
    header of a further turn or a blank line ends the answer, cut from the text as vLLM cuts it."""
    from fsku.gen.format import ZERO_TEMPLATE, example_turn, stop_strings
    from fsku.models.load import load_for_inference

    model, tok = load_for_inference(tiny_model_dir)
    tok.chat_template = ZERO_TEMPLATE
    shots = render_shots([{"prompt": "예시 질문", "answer": "정답: 2 예시"}], lambda u, a: example_turn(tok, u, a))
    text = format_prompt(tok, "질문", system=shots.rstrip())
    assert text == f"{SHOTS_INTRO}\n\n### 질문\n예시 질문\n\n### 답변\n정답: 2 예시\n\n### 질문\n질문\n\n### 답변\n"
    assert stop_strings(tok) == ["\n", "###"] and stop_strings(gemma_tokenizer) == []
    save_model(model, tok, tmp_path / "zero")
    backend = TransformersBackend(tmp_path / "zero", GenConfig(max_model_len=256))
    assert backend.stop == ["\n", "###"]
    out = backend._sample(tok("답은 이렇다\n\n### 질문", add_special_tokens=False).input_ids)
    assert out["text"] == "답은 이렇다" and out["finish_reason"] == "stop"
    assert backend._sample(tok("답은 이렇다", add_special_tokens=False).input_ids)["finish_reason"] == "length"


def test_worked_examples_come_from_other_training_questions():
    qs = [Question(f"T{i}", f"문항 {i}", f"문항 {i}", ["가", "나", "다", "라"] if i % 2 else [],
                   answer="3" if i % 2 else f"답 {i}") for i in range(10)]
    q = qs[1]
    shots = pick_shots(q, qs, 3, exclude={"T3"})
    assert len(shots) == 3 and all(s.is_mcq and s.id not in ("T1", "T3") for s in shots)
    assert pick_shots(q, qs, 3, exclude={"T3"}) == shots and pick_shots(q, qs, 3, seed=1) != shots
    assert gold_answer(qs[1]) == "정답: 3 다" and gold_answer(qs[2]) == "답 2"
    # similar: the stems closest to the question's, the closest last (next to the question)
    pool = [Question(f"S{i}", t, t, [], answer=f"답 {i}") for i, t in
            enumerate(["접근매체 분실 신고 절차", "클라우드 이용 계약", "접근매체 분실 신고 이후 손해 배상",
                       "가명정보 결합"])]
    ask = Question("A", "접근매체 분실 신고 이후의 손해 배상 책임", "접근매체 분실 신고 이후의 손해 배상 책임", [])
    assert [s.id for s in pick_shots(ask, pool, 2, how="similar")] == ["S0", "S2"]
    assert pick_shots(ask, pool, 2, exclude={"S2"}, how="similar")[-1].id == "S0"
    records, _ = build_prompts(qs, lambda t, k: [], PromptsConfig(top_k=0, teacher_shots=2))
    for r in records:
        assert len(r["shots"]) == 2 and r["question_id"] not in {s["question_id"] for s in r["shots"]}
        assert all((s["answer"].startswith("정답: ")) == (r["type"] == "mcq") for s in r["shots"])


def test_answer_stats_count_format_and_accuracy():
    from stages.generate import answer_stats

    ask = "접근매체를 분실한 이용자의 의무를 설명하세요."
    prompts = [{"prompt_id": "a", "type": "mcq", "n_options": 4, "answer": "2", "question": "옳은 것은?"},
               {"prompt_id": "b", "type": "mcq", "n_options": 4, "answer": "3", "question": "옳은 것은?"},
               {"prompt_id": "c", "type": "open", "n_options": 0, "answer": "x", "question": ask},
               {"prompt_id": "d", "type": "open", "n_options": 0, "answer": "y", "question": ask},
               {"prompt_id": "e", "type": "open", "n_options": 0, "answer": "z", "question": ask},
               {"prompt_id": "f", "type": "open", "n_options": 0, "answer": "w", "question": ask}]
    records = [{"prompt_id": "a", "text": "정답: 2 나"}, {"prompt_id": "b", "text": "보기를 보면 3"},
               {"prompt_id": "c", "text": "이용자는 분실 사실을 안 즉시 금융회사에 통지하여야 한다."},
               {"prompt_id": "d", "text": ". . . ."},
               {"prompt_id": "e", "text": "접근매체를 분실한 이용자의 의무를 설명하세요."},
               {"prompt_id": "f", "text": "1.2 용어의 정의"}]
    stats = answer_stats(prompts, records)
    assert stats["in_format"] == 0.3333 and stats["mcq_accuracy"] == 0.5 and stats["mcq_with_answer"] == 2
    assert stats["format_problems"] == {"mcq_no_leading_choice": 1, "open_echo": 1, "open_punctuation": 1,
                                        "open_too_short": 1}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, gemma_tokenizer):
    d = tmp_path_factory.mktemp("tiny") / "model"
    save_model(tiny_gemma(layers=2), gemma_tokenizer, d)
    return d


def _prompts(n):
    return [{"prompt_id": f"{i:016x}", "question_id": f"Q{i}", "type": "open",
             "prompt": f"질문 {i}: 전자금융거래의 접근매체 관리 기준을 설명하세요." + " 추가 설명" * (12 * i)}
            for i in range(n)]


def _gen(model_dir, cfg, partial, who="teacher", sp=None, merge_only=False):
    backend = None if merge_only else TransformersBackend(model_dir, cfg)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_source(model_dir))
    return run_generation(_prompts(5), backend, lambda p: format_prompt(tok, p["prompt"]),
                          sp or SamplingConfig(max_tokens=6), cfg, "tiny", model_fingerprint(model_dir), partial, who,
                          merge_only=merge_only)


def test_transformers_generation_resume_and_shards(tmp_path, tiny_model_dir):
    cfg = GenConfig(batch_size=2, max_model_len=256)
    full, stats = _gen(tiny_model_dir, cfg, tmp_path / "a")
    assert len(full) == 5 and stats["backend"] == "transformers" and stats["generated_tokens"] > 0
    assert all(r["finish_reason"] in ("stop", "length") and r["n_tokens"] <= 6 for r in full)
    assert [r["prompt_id"] for r in full] == [p["prompt_id"] for p in _prompts(5)]

    # a run killed after its first batch, with a half-written line, resumes without redoing it
    part = tmp_path / "b"
    part.mkdir()
    lines = (tmp_path / "a" / "teacher.shard0of1.jsonl").read_text().splitlines()
    (part / "teacher.shard0of1.jsonl").write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])
    resumed, stats = _gen(tiny_model_dir, cfg, part)
    assert stats["resumed_records"] == 2 and resumed == full

    # two shards, as on two machines, then a merge
    shards = tmp_path / "c"
    for i in (0, 1):
        out, _ = _gen(tiny_model_dir, GenConfig(batch_size=2, max_model_len=256, shards=2, shard_index=i), shards)
        assert out is None if i == 0 else out == full
    merged, stats = _gen(tiny_model_dir, cfg, shards, merge_only=True)
    assert merged == full and stats["generated_tokens"] == 0

    # other sampling params do not reuse stale partial records
    other, stats = _gen(tiny_model_dir, cfg, tmp_path / "a", sp=SamplingConfig(max_tokens=3))
    assert stats["resumed_records"] == 0 and all(r["n_tokens"] <= 3 for r in other)


def test_a_model_of_the_same_shapes_swapped_in_after_a_kill_reuses_nothing(tmp_path, gemma_tokenizer):
    """Shards left by a killed run of one model are not resumed by another of the same shapes at the
    same path (other weights): the fingerprint is the weights' content, not their names and sizes."""
    import shutil

    model, cfg = tmp_path / "model", GenConfig(batch_size=2, max_model_len=256)
    save_model(tiny_gemma(layers=2, seed=1), gemma_tokenizer, model)
    first, _ = _gen(model, cfg, tmp_path / "killed")
    shard = tmp_path / "killed" / "teacher.shard0of1.jsonl"
    shard.write_text("\n".join(shard.read_text().splitlines()[:2]) + "\n")  # killed after its first batch
    shutil.rmtree(model)
    save_model(tiny_gemma(layers=2, seed=2), gemma_tokenizer, model)
    resumed, stats = _gen(model, cfg, tmp_path / "killed")
    fresh, _ = _gen(model, cfg, tmp_path / "fresh")
    assert stats["resumed_records"] == 0 and resumed == fresh and fresh != first


def test_long_prompts_are_cut_and_recorded(tmp_path, tiny_model_dir):
    cfg = GenConfig(batch_size=8, max_model_len=64)
    recs, _ = _gen(tiny_model_dir, cfg, tmp_path, sp=SamplingConfig(max_tokens=8))
    assert all(r["prompt_tokens"] <= 56 for r in recs) and any(r["prompt_truncated"] for r in recs)


def test_auto_backend_falls_back_to_transformers_and_says_so(tiny_model_dir, monkeypatch, capsys, tmp_path):
    """A fallback is recorded in the generation stats (``backend_fallback``) and repeated as the
    stage's last stderr lines; transformers asked for is no fallback."""
    from fsku.stage import run

    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM
    monkeypatch.delitem(sys.modules, "fsku.gen.vllm_backend", raising=False)
    seen = {}

    def stage():
        backend = make_backend("auto", tiny_model_dir, GenConfig(max_model_len=256))
        seen["recs"], seen["stats"] = run_generation(_prompts(2), backend, lambda p: p["prompt"],
                                                     SamplingConfig(max_tokens=2), GenConfig(max_model_len=256),
                                                     model="m", fingerprint="f", partial_dir=tmp_path, who="teacher")
        print("stage done", file=sys.stderr)

    run(stage)
    assert seen["stats"]["backend"] == "transformers"
    assert seen["stats"]["backend_fallback"].startswith("vLLM does not import")
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("WARNING: backend fallback: ") and "vLLM does not import" in last and "transformers" in last
    with pytest.raises(ValueError, match="vllm requested but it does not import"):
        make_backend("vllm", tiny_model_dir, GenConfig(max_model_len=256))
    plain = make_backend("transformers", tiny_model_dir, GenConfig(max_model_len=256))
    assert plain.name == "transformers" and plain.fallback is None


def test_a_vllm_that_cannot_start_is_a_recorded_fallback_or_an_error(tiny_model_dir, monkeypatch):
    """What a 7B teacher on a 24 GB GPU with the CPU default's vLLM settings meets (the engine
    cannot start; simulated: no GPU here): auto records why, vllm stops."""
    import fsku.gen.vllm_backend as vb

    def cannot_start(self, model_dir, cfg):
        raise ValueError("No available memory for the cache blocks. Try increasing `gpu_memory_utilization`")

    monkeypatch.setattr(vb.VLLMBackend, "__init__", cannot_start)
    backend = make_backend("auto", tiny_model_dir, GenConfig(max_model_len=256))
    assert backend.name == "transformers" and "vLLM did not start (No available memory" in backend.fallback
    with pytest.raises(ValueError, match="No available memory"):
        make_backend("vllm", tiny_model_dir, GenConfig(max_model_len=256))


def test_pairs_join_on_prompt_id_and_split_by_prompt():
    teacher = [{"prompt_id": f"p{i}", "question_id": f"Q{i}", "prompt": f"질문{i}", "text": f"교사 답변 {i}입니다."}
               for i in range(200)]
    student = [{**t, "text": f"학생 답변 {t['prompt_id']}"} for t in reversed(teacher)]
    student[0]["text"] = "   "
    student[1]["text"] = "같은 말\n" * 10
    teacher[5]["text"] = "반복 반복 반복 반복 " * 10
    train, test, counts = make_pairs(teacher, student[:-1], PairsConfig(test_fraction=0.25))
    assert counts["dropped"] == {"no_student_answer": 1, "student_empty": 1, "student_repetition": 1,
                                 "teacher_repetition": 1}
    ids_train, ids_test = {p["prompt_id"] for p in train}, {p["prompt_id"] for p in test}
    assert not ids_train & ids_test and 30 <= len(test) <= 70
    pair = next(p for p in train + test if p["prompt_id"] == "p7")
    assert pair["chosen"][1]["content"] == "교사 답변 7입니다." and pair["rejected"][1]["content"] == "학생 답변 p7"
    assert pair["chosen"][0] == pair["rejected"][0] == {"role": "user", "content": "질문7"}
    again = make_pairs(teacher, student[:-1], PairsConfig(test_fraction=0.25))
    assert json.dumps(again[:2]) == json.dumps((train, test))


@pytest.mark.parametrize("text, reason", [("", "empty"), (" \n\t", "empty"), ("답변\n" * 8, "repetition"),
                                          ("정답: 2. 이유는 제5조에 따라 5회이기 때문이다.", None)])
def test_degenerate_reason(text, reason):
    assert degenerate_reason(text, PairsConfig()) == reason


def test_several_samples_per_prompt(tmp_path, tiny_model_dir):
    sp = SamplingConfig(max_tokens=5, temperature=1.0, n=3, seed=1)
    recs, _ = _gen(tiny_model_dir, GenConfig(batch_size=2, max_model_len=256), tmp_path, sp=sp)
    for r in recs:
        assert len(r["samples"]) == 3 and r["text"] == r["samples"][0]["text"]
        assert all(s["finish_reason"] in ("stop", "length") and 0 < s["n_tokens"] <= 5 for s in r["samples"])
    assert any(len({s["text"] for s in r["samples"]}) > 1 for r in recs)  # sampled, not copies
    again, _ = _gen(tiny_model_dir, GenConfig(batch_size=2, max_model_len=256), tmp_path / "again", sp=sp)
    assert again == recs  # seeded
    with pytest.raises(ConfigError, match="student.n: 2 samples of a greedy"):
        from_dict(GenConfig, {"student": {"n": 2}})


def test_lora_adapter_student_is_merged_for_transformers(tmp_path, tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    cfg = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir)
    assert model_fingerprint(tmp_path / "adapter") != model_fingerprint(tiny_model_dir)
    sp = SamplingConfig(max_tokens=6)
    with_adapter, _ = _gen(tmp_path / "adapter", GenConfig(batch_size=5, max_model_len=256), tmp_path / "a", sp=sp)
    plain, _ = _gen(tiny_model_dir, GenConfig(batch_size=5, max_model_len=256), tmp_path / "b", sp=sp)
    assert [r["text"] for r in with_adapter] != [r["text"] for r in plain]


def _bank():
    return {"Q1": Question("Q1", "", "정답은?", ["가", "나", "다", "라"], answer="3"),
            "Q2": Question("Q2", "", "설명하세요.", [], answer="접근매체는 즉시 이용 정지해야 한다.",
                           keywords=["접근매체", "이용 정지"]),
            "Q3": Question("Q3", "", "답이 없는 문항", ["가", "나"])}


def test_best_vs_worst_pairs_rank_samples_by_reference():
    from fsku.scoring import reference_score

    def rec(pid, qid, texts):
        return {"prompt_id": pid, "question_id": qid, "prompt": f"질문 {qid}", "text": texts[0],
                "samples": [{"text": t} for t in texts]}

    teacher = [rec("p1", "Q1", ["정답: 1번입니다.", "정답: 3번입니다."]),
               rec("p2", "Q2", ["모르겠습니다 잘.", "접근매체를 분실하면 즉시 이용 정지를 신청한다."]),
               rec("p3", "Q3", ["1번", "2번"]),
               rec("p4", "Q1", ["정답 2", "정답 4"])]
    student = [rec("p1", "Q1", ["정답은 3", "정답은 2"]), rec("p2", "Q2", ["반복 반복 반복 반복 " * 6, "접근매체"]),
               rec("p3", "Q3", ["1", "1"]), rec("p4", "Q1", ["정답 1", "1"])]
    cfg = PairsConfig(strategy="best_vs_worst", test_fraction=0.0)
    train, test, counts = make_pairs(teacher, student, cfg, _bank(), reference_score)
    by_id = {p["prompt_id"]: p for p in train}
    assert set(by_id) == {"p1", "p2"} and not test
    # ties on the best score go to the teacher, on the worst to the student
    assert by_id["p1"]["chosen"][1]["content"] == "정답: 3번입니다." and by_id["p1"]["chosen_source"] == "teacher"
    assert by_id["p1"]["rejected"][1]["content"] == "정답은 2" and by_id["p1"]["rejected_source"] == "student"
    assert by_id["p2"]["chosen"][1]["content"].startswith("접근매체를 분실하면")
    assert counts["dropped"] == {"no_reference": 1, "student_sample_repetition": 1, "tied": 1}
    with pytest.raises(ValueError, match="needs the question bank"):
        make_pairs(teacher, student, cfg)


def test_pairs_stage_writes_jsonl_and_hf_dataset(tmp_path):
    import datasets

    recs = [{"prompt_id": f"p{i}", "question_id": f"Q{i}", "prompt": f"질문 {i}", "text": f"답변 {i}번입니다."}
            for i in range(20)]
    for who in ("teacher", "student"):
        (tmp_path / f"{who}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs))
    (tmp_path / "params.yaml").write_text("pairs:\n  test_fraction: 0.3\n")
    from conftest import ROOT, run

    def stage(out):
        run([sys.executable, "-m", "stages.pairs", "--params", str(tmp_path / "params.yaml"),
             "--teacher", str(tmp_path / "teacher.jsonl"), "--student", str(tmp_path / "student.jsonl"),
             "--out", str(tmp_path / out), "--metrics", str(tmp_path / f"{out}.json")], cwd=ROOT)

    stage("pairs")
    ds = datasets.load_from_disk(str(tmp_path / "pairs" / "hf"))
    train = [json.loads(x) for x in (tmp_path / "pairs" / "train.jsonl").read_text().splitlines()]
    assert ds["train"].num_rows == len(train) and ds["train"][0]["chosen"] == train[0]["chosen"]
    assert ds["train"].num_rows + ds["test"].num_rows == 20 and ds["test"].num_rows > 0
    stage("again")
    files = sorted(p.relative_to(tmp_path / "pairs") for p in (tmp_path / "pairs").rglob("*") if p.is_file())
    assert all((tmp_path / "pairs" / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    # no pair held out: a clear error that names the param, and the previous out is kept
    (tmp_path / "params.yaml").write_text("pairs:\n  test_fraction: 0.0\n")
    with pytest.raises(AssertionError, match=r"no test pair among 20 pairs \(pairs\.test_fraction 0\.0\)"):
        stage("pairs")
    assert datasets.load_from_disk(str(tmp_path / "pairs" / "hf"))["test"].num_rows > 0


def test_frequency_penalty_counts_answer_tokens_only(tiny_model_dir):
    """vLLM's frequency_penalty on transformers: a logit loses the penalty once per earlier use of its
    token in the answer; prompt tokens (the context an answer may copy) cost nothing. A strong penalty
    leaves a greedy answer with fewer repeated tokens than none."""
    import torch

    from fsku.gen.backends import AnswerFrequencyPenalty

    ids = torch.tensor([[5, 5, 7, 9, 9, 9], [5, 6, 6, 7, 1, 2]])  # prompt width 3
    scores = torch.zeros(2, 12)
    out = AnswerFrequencyPenalty(0.5, 3)(ids, scores.clone())
    want = torch.zeros(2, 12)
    want[0, 9] = -1.5
    want[1, 7] = want[1, 1] = want[1, 2] = -0.5
    assert torch.equal(out, want)
    assert torch.equal(AnswerFrequencyPenalty(0.5, 6)(ids, scores.clone()), scores)  # nothing generated yet

    backend = TransformersBackend(tiny_model_dir, GenConfig(max_model_len=256))
    prompts = ["전자금융거래 접근매체의 관리 기준을 설명하세요.", "개인신용정보 보존 기간은?"]

    def repeats(penalty):
        outs = backend.generate(prompts, SamplingConfig(max_tokens=24, frequency_penalty=penalty), 0)
        toks = [backend.tokenizer(o["text"], add_special_tokens=False).input_ids for o in outs]
        return sum(len(t) - len(set(t)) for t in toks)

    assert repeats(2.0) < repeats(0.0)


def test_stop_strings_stop_where_transformers_does(gemma_tokenizer):
    """StopStrings (no vocabulary-wide table) against transformers' StopStringCriteria, on random
    sequences of tokens around the zero template's stop strings: the same verdict at every step."""
    import random

    import torch
    from transformers.generation.stopping_criteria import StopStringCriteria

    from fsku.gen.backends import StopStrings
    from fsku.gen.format import ZERO_STOP

    tok = gemma_tokenizer
    pieces = ["\n", "\n\n", "#", "##", "###", "####", " ###", "###\n", "답", "변", " 정답", ":", " 1", "2.",
              "전자", "금융", " ", "a", "\n#", "#\n"]
    ids = sorted({i for p in pieces for i in tok(p, add_special_tokens=False).input_ids})
    ours, upstream = StopStrings(tok, ZERO_STOP), StopStringCriteria(tok, ZERO_STOP)
    rng = random.Random(0)
    stops = 0
    for _ in range(300):
        row = [rng.choice(ids) for _ in range(12)]
        for n in range(2, len(row) + 1):
            x = torch.tensor([row[:n]])
            want = bool(upstream(x, None)[0])
            assert bool(ours(x, None)[0]) == want, (tok.convert_ids_to_tokens(row[:n]), want)
            stops += want
    assert stops > 100  # both verdicts occur often


GEMMA_IT = ("{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else "
            "m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
            "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def test_exactly_one_bos_with_a_template_that_writes_it(gemma_tokenizer, tiny_model_dir, tmp_path):
    """The embedded Gemma's tokenizer adds BOS (its GGUF says so; transformers' conversion drops it),
    and a Gemma-IT style template that writes BOS itself does not get a second one: in the prompt
    as generation, option scoring and training tokenize it, with a tokenizer that adds BOS and one
    that does not."""
    import copy

    from fsku.gen.format import adds_bos
    from fsku.models.load import load_for_inference

    bos = gemma_tokenizer.bos_token_id
    assert gemma_tokenizer("전자금융").input_ids[0] == bos and adds_bos(gemma_tokenizer)
    model, _ = load_for_inference(tiny_model_dir)
    for add in (True, False):
        tok = copy.deepcopy(gemma_tokenizer)
        tok.add_bos_token = add
        tok.chat_template = GEMMA_IT
        text = format_prompt(tok, "접근매체란?")
        assert text.startswith("<start_of_turn>user") == add
        assert tok(text).input_ids.count(bos) == 1 and tok(text).input_ids[0] == bos
        save_model(model, tok, tmp_path / str(add))
        backend = TransformersBackend(tmp_path / str(add), GenConfig(max_model_len=256))
        ids, _ = backend._encode([text], 200)
        assert ids[0].count(bos) == 1 and ids[0][0] == bos


def test_a_vllm_memory_share_that_cannot_hold_the_weights_stops_with_the_fix(tiny_model_dir, tmp_path):
    """The 7B teacher on one 24 GB GPU with the CPU default's share (0.3) and float32: an error that
    names the key and the values that fit, whatever backend was asked (auto does not fall back)."""
    from fsku.gen.config import check_vllm_memory, weights_gib

    stored = weights_gib(tiny_model_dir, "auto")
    assert stored == pytest.approx(sum(f.stat().st_size for f in tiny_model_dir.glob("*.safetensors")) / 2**30)
    assert weights_gib(tiny_model_dir, "bfloat16") == pytest.approx(stored / 2)  # stored float32
    assert weights_gib(tmp_path / "hub-id", "auto") is None
    seven_b = 7.6e9 * 2 / 2**30  # Qwen2.5-7B's parameters in bfloat16
    with pytest.raises(ConfigError, match=r"gen.vllm_memory_utilization: 0.3 of 23.6 GiB x 1 GPU\(s\) is 7.1 GiB, "
                                          r".*take 28.3 GiB in float32.*raise it to about 0.95 "
                                          r"and set gen.vllm_dtype: bfloat16"):
        check_vllm_memory(GenConfig(vllm_dtype="float32"), "models/teacher", seven_b * 2, 23.6)
    with pytest.raises(ConfigError, match=r"take 14.2 GiB in bfloat16 .*raise it to about 0.7"):  # auto, on a GPU
        check_vllm_memory(GenConfig(), "models/teacher", seven_b, 23.6)
    with pytest.raises(ConfigError, match=r"take 14.2 GiB in bfloat16 .*raise it to about 0.7"):
        check_vllm_memory(GenConfig(vllm_dtype="bfloat16"), "models/teacher", seven_b, 23.6)
    check_vllm_memory(GenConfig(vllm_dtype="bfloat16", vllm_memory_utilization=0.9), "models/teacher", seven_b, 23.6)
    check_vllm_memory(GenConfig(vllm_dtype="bfloat16", tensor_parallel_size=4), "models/teacher", seven_b, 23.6)
