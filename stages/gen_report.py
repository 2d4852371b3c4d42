"""Stage `gen_report`: both generation stages' figures in one metrics file (metrics/generation.json).

Each generation stage writes its own figures (data/gen/{teacher,student}.stats.json); nothing
downstream depends on them or on this report, so their timings never rerun the pipeline.
"""

from fsku.io import read_json, write_json
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--stats", nargs="+", default=[P["teacher_gen_stats"], P["student_gen_stats"]])
    p.add_argument("--out", default=P["metrics"]["generation"])
    args = p.parse_args()
    report = {"tokens_per_s": {}}
    for path in args.stats:
        stats = read_json(path)
        report["tokens_per_s"][f"{stats['stage']}/{stats['backend']}"] = stats["tokens_per_s"]
        report[stats["stage"]] = stats
    write_json(args.out, report)
    print(report["tokens_per_s"])


if __name__ == "__main__":
    run(main)
