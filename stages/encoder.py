"""Stage `encoder`: the default teacher's GGUF -> a static sentence encoder in models/encoder."""

from fsku.config import load_section
from fsku.embedding.static import EncoderConfig, build_static_encoder
from fsku.stage import parser, paths, run


def main() -> None:
    P = paths()
    p = parser(__doc__)
    p.add_argument("--out", default=P["encoder"])
    args = p.parse_args()
    cfg = load_section(EncoderConfig, "encoder", args.params)
    info = build_static_encoder(cfg, args.out)
    print(f"encoder: {info}")


if __name__ == "__main__":
    run(main)
