"""Stage `merge`: models/distilled (LoRA adapter or full model) -> models/merged (a plain model)."""

from fsku.distill.merge import merge
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--model", default=P["distilled"])
    p.add_argument("--out", default=P["merged"])
    args = p.parse_args()
    print(merge(args.model, args.out))


if __name__ == "__main__":
    run(main)
