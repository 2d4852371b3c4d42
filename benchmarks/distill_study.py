"""The distillation study: every method on the same pairs and step budget, several seeds each, as
queued DVC experiments, and the table that compares them.

    python benchmarks/distill_study.py queue [--seeds 0 1 2] [--methods fkl gkd ...]
    dvc queue start -j 1             # runs them one by one (dvc queue status / dvc queue logs NAME)
    python benchmarks/distill_study.py save          # finished experiments -> benchmarks/distill_study_runs.jsonl
    python benchmarks/distill_study.py report [--md]

`queue` adds one experiment per method and seed, named `study-<method>-s<seed>`, each a
`dvc exp run --queue -S train.seed=<seed> -S <the method's params> eval_row@distilled`: the stages
from the method's first changed one up to the distilled model's eval row run (distill, merge,
`eval_row@distilled`; `sft` onwards for the method without it), the rest comes from the cache, and
the quantized row, the report and `predict` are left out (about 12 min an experiment on 2 CPU
cores instead of 40). `report` reads the experiments back (`dvc exp show --json`) and prints, per
method, the mean and the spread over seeds of: the test-pair KL to the teacher after training
(`metrics/distill.json`), the distilled row's MCQ accuracy, open score, total, MCQ agreement with
the teacher and token KL to the teacher on the teacher's eval answers (`metrics/eval/distilled.json`),
its MCQ margin over the best baseline (`metrics/eval.json`'s, which no train param changes),
training time and peak memory. Rows of seeds still running or failed are counted and left out.

Experiments live in one clone's `.dvc/tmp` and `refs/exps`, and a study of 27 runs takes longer than a
working session, so `save` keeps each finished one as a line of `benchmarks/distill_study_runs.jsonl`
(committed): its params, baseline commit, machine, the metrics above and what it answered (the
distilled row's MCQ picks per option, its own open answers). `report` reads that file and the
clone's experiments together, an experiment of the clone replacing its saved line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections import Counter

from common import ROOT, machine

# the same pairs, steps and learning rate for all; only what each method changes
METHODS = {
    "fkl": {"train.loss": "fkl"},
    "rkl": {"train.loss": "rkl"},
    "skl": {"train.loss": "skl"},
    "srkl": {"train.loss": "srkl"},
    "jsd": {"train.loss": "jsd"},
    "distillm2": {"train.loss": "distillm2"},
    "distillm2_gradual": {"train.loss": "distillm2", "train.gradual_beta": "true"},
    "distillm2_no_sft": {"train.loss": "distillm2", "sft.steps": "0"},  # the recipe without its first step
    "gkd": {"train.method": "gkd"},
}
# every experiment: the loss from full logits, as the study's first runs had it (commit 20a92a0, before
# train.fused_loss existed), so seeds run later compare with them exactly; the fused loss gives the
# same values to float rounding (tests/test_fused_loss.py)
COMMON = {"train.fused_loss": "false"}
PREFIX = "study-"
ROW = "metrics/eval/distilled.json"
TARGET = "eval_row@distilled"
ROW_OUT = "data/eval/rows/distilled.jsonl"
RUNS = ROOT / "benchmarks" / "distill_study_runs.jsonl"
COLUMNS = [  # (header, file, path in the file); "margin": the row's MCQ minus the best MCQ baseline's
    ("test KL", "metrics/distill.json", ["kl_after"]),
    ("MCQ", ROW, ["mcq_accuracy"]),
    ("open", ROW, ["open_score"]),
    ("open, model only", ROW, ["model_only", "open_score"]),
    ("total", ROW, ["total"]),
    ("MCQ margin", "margin", []),
    ("teacher agreement", ROW, ["teacher_agreement"]),
    ("KL to teacher (eval)", ROW, ["kl_to_teacher"]),
    ("top pick share", "answers", ["top_pick_share"]),
    ("train s", "metrics/distill.json", ["train_s"]),
    ("peak MB", "metrics/distill.json", ["peak_memory_mb"]),
]


def dvc(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dvc", *args], cwd=ROOT, check=True, capture_output=True,
                          text=True).stdout


def queue(methods: list[str], seeds: list[int], prefix: str = PREFIX) -> None:
    for seed in seeds:  # seed-major: a queue stopped half-way still covers every method
        for name in methods:
            sets = [f"train.seed={seed}", *(f"{k}={v}" for k, v in {**COMMON, **METHODS[name]}.items())]
            dvc("exp", "run", "--queue", "-n", f"{prefix}{name}-s{seed}", *(a for s in sets for a in ("-S", s)), TARGET)
            print(f"queued {prefix}{name}-s{seed}: {' '.join(sets)}")
    print("now: dvc queue start -j 1")


def experiments(prefix: str) -> dict[str, dict]:
    """{experiment name: {metrics file: its data}} for the finished experiments named ``prefix``..."""
    out = {}
    # `dvc exp show` lists queued and running experiments too, with the workspace's metrics (its
    # status field stays empty here): the queue says which of its tasks finished
    tasks = [line.split() for line in dvc("queue", "status").splitlines()[1:] if len(line.split()) > 2]
    # a name queued again after a failed or killed run is finished once any of its tasks succeeded
    unfinished = {t[1] for t in tasks if t[-1] != "Success"} - {t[1] for t in tasks if t[-1] == "Success"}
    for baseline in json.loads(dvc("exp", "show", "--json", "-A")):
        for exp in baseline.get("experiments") or []:
            name = exp.get("name") or ""
            for rev in exp.get("revs") or []:
                data = rev.get("data") or {}
                if (not name.startswith(prefix) or name in unfinished or rev.get("error")
                        or data.get("status") not in (None, "Success")):
                    continue
                metrics = {f: (m or {}).get("data") for f, m in (data.get("metrics") or {}).items()}
                if not metrics.get(ROW) and dig(metrics.get("metrics/eval.json"), ["rows", "distilled"]):
                    metrics[ROW] = metrics["metrics/eval.json"]["rows"]["distilled"]  # before the per-row stages
                if all(metrics.get(f) for f in ("metrics/distill.json", ROW, "metrics/eval.json")):
                    out[name] = {**metrics, "rev": rev.get("rev"), "baseline": baseline.get("rev")}
    return out


def with_margin(metrics: dict) -> dict:
    best = dig(metrics.get("metrics/eval.json"), ["best_baseline", "mcq", "accuracy"])
    mcq = dig(metrics.get(ROW), ["mcq_accuracy"])
    return {**metrics, "margin": round(mcq - best, 4) if best is not None and mcq is not None else None}


def answers(rev: str) -> dict | None:
    """What the experiment's distilled row answered, read from the DVC cache through its dvc.lock:
    MCQ picks per option (a model that picks one option everywhere scores the baseline, not
    knowledge) and how many open answers are the model's own rather than the fallback's."""
    import yaml

    lock = yaml.safe_load(git("show", f"{rev}:dvc.lock"))
    outs = (lock.get("stages", {}).get(TARGET) or {}).get("outs") or []
    md5 = next((o["md5"] for o in outs if o.get("path") == ROW_OUT), None)
    blob = ROOT / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:] if md5 else None
    if blob is None or not blob.exists():
        return None
    lines = [json.loads(x) for x in blob.read_text(encoding="utf-8").splitlines() if x.strip()]
    mcq = [x for x in lines if x.get("type") == "mcq"]
    picks = Counter(str(x.get("answer")) for x in mcq)
    opens = [x for x in lines if x.get("type") == "open"]
    return {"mcq_picks": dict(sorted(picks.items())),
            "top_pick_share": round(max(picks.values()) / len(mcq), 4) if mcq else None,
            "open_own": sum(1 for x in opens if not x.get("fallback")), "open": len(opens)}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def record(name: str, metrics: dict, prefix: str = PREFIX) -> dict:
    """One line of RUNS: small enough to commit (the row's per-domain breakdown left out)."""
    method, seed = name[len(prefix):].rsplit("-s", 1)
    row = {k: v for k, v in metrics[ROW].items() if k != "by_domain"}
    return {"name": name, "method": method, "seed": int(seed),
            "params": [f"train.seed={seed}", *(f"{k}={v}" for k, v in {**COMMON, **METHODS.get(method, {})}.items())],
            "baseline": metrics.get("baseline"), "machine": machine(),
            "metrics/distill.json": metrics["metrics/distill.json"], ROW: row,
            "metrics/eval.json": {"best_baseline": metrics["metrics/eval.json"].get("best_baseline")},
            "answers": answers(metrics["rev"])}


def saved() -> dict[str, dict]:
    if not RUNS.exists():
        return {}
    return {r["name"]: r for r in (json.loads(x) for x in RUNS.read_text(encoding="utf-8").splitlines() if x.strip())}


def save(prefix: str = PREFIX) -> None:
    runs = saved()
    found = experiments(prefix)
    for name, metrics in found.items():
        runs[name] = record(name, metrics, prefix)
    tmp = RUNS.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(runs[n], ensure_ascii=False, sort_keys=True) + "\n" for n in sorted(runs)),
                   encoding="utf-8")
    tmp.replace(RUNS)
    print(f"{len(found)} finished experiments saved; {RUNS.relative_to(ROOT)} holds {len(runs)}")


def dig(data, path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def num(x: float, scale: float | None = None) -> str:
    """Whole numbers for figures of 100 and up (seconds, MB), else 3 decimals; a spread takes its
    mean's format (``scale``)."""
    return f"{x:.0f}" if abs(x if scale is None else scale) >= 100 else f"{x:.3f}"


def report(markdown: bool, prefix: str = PREFIX) -> None:
    found = {n: r for n, r in saved().items() if n.startswith(prefix)}
    live = experiments(prefix)
    found.update({n: {**m, "answers": answers(m["rev"]), "machine": machine()} for n, m in live.items()})
    found = {n: with_margin(m) for n, m in found.items()}
    rows = []
    for name in METHODS:
        runs = [m for exp, m in sorted(found.items()) if exp.rsplit("-s", 1)[0] == f"{prefix}{name}"]
        if not runs:
            continue
        cells = []
        for _, file, path in COLUMNS:
            values = [v for v in (dig(r.get(file), path) for r in runs) if isinstance(v, (int, float))
                      and not isinstance(v, bool)]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(num(values[0]))
            else:
                mean = statistics.mean(values)
                cells.append(f"{num(mean)} ± {num(statistics.stdev(values), mean)}")
        rows.append([name, str(len(runs)), *cells])
    header = ["method", "seeds", *(c[0] for c in COLUMNS)]
    machines = sorted({m.get("machine") or "unknown machine" for m in found.values()})
    print(f"{'; '.join(machines)}; {len(found)} finished study experiments ({len(live)} in this clone), "
          "mean ± sample std over seeds")
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---" for _ in header) + " |")
        for r in rows:
            print("| " + " | ".join(r) + " |")
    else:
        for r in [header, *rows]:
            print("  ".join(f"{c:>14s}" for c in r))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    q = sub.add_parser("queue")
    q.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    q.add_argument("--methods", nargs="+", choices=sorted(METHODS), default=list(METHODS))
    q.add_argument("--prefix", default=PREFIX, help="name the experiments <prefix><method>-s<seed> (a study of "
                   "another default: its own prefix, so report keeps the two apart)")
    sv = sub.add_parser("save")
    sv.add_argument("--prefix", default=PREFIX)
    r = sub.add_parser("report")
    r.add_argument("--md", action="store_true")
    r.add_argument("--prefix", default=PREFIX, help="experiments named <prefix><method>-s<seed>")
    args = p.parse_args()
    if args.cmd == "queue":
        queue(args.methods, args.seeds, args.prefix)
    elif args.cmd == "save":
        save(args.prefix)
    else:
        report(args.md, args.prefix)


if __name__ == "__main__":
    main()
