import json
import sys

import pytest

from conftest import tiny_gemma
from fsku.gen.backends import TransformersBackend, make_backend
from fsku.gen.config import DedupConfig, GenConfig, PromptsConfig, SamplingConfig
from fsku.gen.format import format_prompt
from fsku.gen.pairs import PairsConfig, degenerate_reason, make_pairs
from fsku.gen.prompts import build_prompts, dedup
from fsku.gen.runner import model_fingerprint, run_generation
from fsku.models.load import save_model
from fsku.questions import Question


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
    assert counts["prompts"] == 2 and counts["mcq"] == 1
    capped, counts = build_prompts(qs * 1, lambda t, k: [], PromptsConfig(top_k=0, max_prompts=1))
    assert len(capped) == 1 and "(없음)" in capped[0]["prompt"]


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

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return run_generation(_prompts(5), backend, lambda u: format_prompt(tok, u), sp or SamplingConfig(max_tokens=6),
                          cfg, "tiny", model_fingerprint(model_dir), partial, who, merge_only=merge_only)


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


def test_long_prompts_are_cut_and_recorded(tmp_path, tiny_model_dir):
    cfg = GenConfig(batch_size=8, max_model_len=64)
    recs, _ = _gen(tiny_model_dir, cfg, tmp_path, sp=SamplingConfig(max_tokens=8))
    assert all(r["prompt_tokens"] <= 56 for r in recs) and any(r["prompt_truncated"] for r in recs)


def test_auto_backend_falls_back_to_transformers(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # as on a machine without vLLM
    monkeypatch.delitem(sys.modules, "fsku.gen.vllm_backend", raising=False)
    assert make_backend("auto", tiny_model_dir, GenConfig(max_model_len=256)).name == "transformers"
    with pytest.raises(ValueError, match="vllm requested but it does not import"):
        make_backend("vllm", tiny_model_dir, GenConfig(max_model_len=256))
    assert make_backend("transformers", tiny_model_dir, GenConfig(max_model_len=256)).name == "transformers"


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
