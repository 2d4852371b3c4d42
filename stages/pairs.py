"""Stage `pairs`: teacher and student answers -> preference pairs (data/pairs/{train,test}.jsonl)."""

from fsku.config import load_section
from fsku.gen.pairs import PairsConfig, make_pairs
from fsku.io import read_jsonl, write_json, write_jsonl
from fsku.stage import parser, run


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--teacher", default="data/gen/teacher.jsonl")
    p.add_argument("--student", default="data/gen/student.jsonl")
    p.add_argument("--out", default="data/pairs")
    p.add_argument("--metrics", default="metrics/pairs.json")
    args = p.parse_args()
    cfg = load_section(PairsConfig, "pairs", args.params)
    train, test, counts = make_pairs(read_jsonl(args.teacher), read_jsonl(args.student), cfg)
    write_jsonl(f"{args.out}/train.jsonl", train)
    write_jsonl(f"{args.out}/test.jsonl", test)
    write_json(args.metrics, counts)
    print(counts)


if __name__ == "__main__":
    run(main)
