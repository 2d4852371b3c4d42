"""Stage `distill`: DistiLLM-2 training of the student on the pairs -> models/distilled
(a LoRA adapter, or a full model with train.lora.enabled false), metrics/distill.json and the
dvclive curves in metrics/distill_log/.

    python -m stages.distill          # train.num_processes > 1 relaunches itself under accelerate launch
    accelerate launch --config_file configs/accelerate/fsdp.yaml -m stages.distill   # or any launcher

A killed run, rerun, resumes from its newest checkpoint in data/distill_ckpt/.
"""

import os
import subprocess
import sys
from pathlib import Path

from fsku.config import load_section
from fsku.distill.config import TrainConfig
from fsku.distill.train import run_distill
from fsku.stage import parser, paths, run, seed_everything


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--pairs", default=P["pairs"])
    p.add_argument("--teacher", default=P["teacher"])
    p.add_argument("--student", default=P["student_sft"])  # the sft stage's out
    p.add_argument("--out", default=P["distilled"])
    p.add_argument("--teacher-logits", default=P["teacher_logits"])  # read when train.teacher_logits is cached
    p.add_argument("--checkpoints", default=P["distill_ckpt"])
    p.add_argument("--log-dir", default=P["distill_log"])
    p.add_argument("--metrics", default=P["metrics"]["distill"])
    args = p.parse_args()
    cfg = load_section(TrainConfig, "train", args.params)
    if cfg.num_processes > 1 and "LOCAL_RANK" not in os.environ and not os.environ.get("FSKU_LAUNCHED"):
        # not under a launcher yet: become one. torchrun-style processes (accelerate's multi-GPU
        # launcher) also serve CPUs, where the trainer's use_cpu picks gloo for DDP.
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
                  str(cfg.num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        env = {**os.environ, "FSKU_LAUNCHED": "1"}
        subprocess.run([*launch, "-m", "stages.distill", *sys.argv[1:]], check=True, env=env)
        return
    seed_everything(cfg.seed)
    summary = run_distill(cfg, Path(args.pairs), args.teacher, args.student, Path(args.out),
                          Path(args.checkpoints), Path(args.log_dir), Path(args.metrics), Path(args.teacher_logits))
    if summary:
        print({k: summary[k] for k in ("steps", "kl_before", "kl_after", "kl_drop")})


if __name__ == "__main__":
    run(main)
