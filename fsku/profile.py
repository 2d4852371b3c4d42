"""Profiles: tracked overlays of ``params.yaml`` for a hardware and model recipe
(``configs/profiles/<name>.yaml``), applied as param changes DVC sees.

A profile holds only the keys it changes, in ``params.yaml``'s own shape, plus ``profile: <name>``
so that ``dvc exp show`` names the profile each experiment ran under. Nothing reads the overlay at
stage time: it is written into ``params.yaml`` (``apply``) or passed to ``dvc exp run`` as ``-S``
settings (``run``), so ``params.yaml`` stays the single source of truth and only the stages whose
params a profile changes rerun.

    python -m fsku.profile list
    python -m fsku.profile show gpu-24gb          # the -S settings it amounts to
    python -m fsku.profile run gpu-24gb [--queue] # dvc exp run -n gpu-24gb -S ... (one experiment)
    python -m fsku.profile apply gpu-24gb         # edit params.yaml in place (comments kept); then dvc repro
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fsku.config import ConfigError, from_dict, load_yaml
from fsku.io import atomic_path

PROFILES = Path("configs/profiles")


def sections() -> dict[str, type]:
    """Each ``params.yaml`` section and the config class its stages load it into."""
    from fsku.chunking.config import ChunkConfig
    from fsku.distill.config import TeacherLogitsConfig, TrainConfig
    from fsku.distill.pairs import PairsConfig
    from fsku.distill.sft import SftConfig
    from fsku.embedding.static import EncoderConfig
    from fsku.gen.config import GenConfig, PromptsConfig
    from fsku.models.config import StudentConfig, TeacherConfig
    from fsku.predict.config import EvalConfig, PredictConfig
    from fsku.quantize import QuantConfig
    from fsku.retrieval.config import IndexConfig
    from fsku.synth.config import SynthConfig

    return {"chunk": ChunkConfig, "encoder": EncoderConfig, "index": IndexConfig, "teacher": TeacherConfig,
            "student": StudentConfig, "synth": SynthConfig, "prompts": PromptsConfig, "gen": GenConfig,
            "pairs": PairsConfig,
            "sft": SftConfig, "teacher_logits": TeacherLogitsConfig, "train": TrainConfig, "quant": QuantConfig,
            "eval": EvalConfig,
            "predict": PredictConfig}


def profile_path(name: str, root: Path = Path(".")) -> Path:
    """A profile's file: a name under ``configs/profiles`` or a path to a YAML file."""
    path = Path(name)
    if path.suffix not in (".yaml", ".yml"):
        path = root / PROFILES / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (root / PROFILES).glob("*.yaml"))
        raise FileNotFoundError(f"profile {name}: no file {path} (profiles: {', '.join(known) or 'none'})")
    return path


def load_profile(path: Path) -> dict:
    """The overlay in ``path``, checked for shape: known sections, ``profile`` naming it."""
    try:
        data = load_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of params.yaml sections")
    unknown = sorted(set(data) - set(sections()) - {"profile"})
    if unknown:
        raise ConfigError(f"{path}: unknown section {unknown[0]} (params.yaml's: profile, {', '.join(sections())})")
    if not isinstance(data.get("profile"), str) or not data["profile"]:
        raise ConfigError(f"{path}: profile: the profile's name, shown by dvc exp show (e.g. profile: {path.stem})")
    return data


def merged(base: dict, overlay: dict) -> dict:
    """``base`` with ``overlay``'s keys replacing its own, mapping by mapping (lists replace whole)."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def check(params: dict, overlay: dict, where: str) -> dict:
    """The params ``overlay`` turns ``params`` into, each section it touches loaded as its stages
    load it: an unknown key, a wrong type or an out-of-range value names the profile file and key."""
    out = merged(params, overlay)
    for name, cls in sections().items():
        if name in overlay:
            try:
                from_dict(cls, out.get(name), prefix=name)
            except ConfigError as e:
                raise ConfigError(f"{where}: {e}") from None
    return out


def settings(overlay: dict, prefix: str = "") -> list[tuple[str, Any]]:
    """The overlay's leaves as (dotted key, value), in file order."""
    out = []
    for k, v in overlay.items():
        key = f"{prefix}{k}"
        out += settings(v, key + ".") if isinstance(v, dict) else [(key, v)]
    return out


_PLAIN = re.compile(r"[A-Za-z_][\w\-./]*")
_WORDS = {"true", "false", "null", "nan", "inf"}


def override_value(value: Any) -> str:
    """``value`` in the override grammar ``dvc exp run -S`` parses (Hydra's): strings quoted unless
    plainly a word or path, so a hub id or an empty string arrives as the same string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _WORDS:
            return value
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise ConfigError(f"unsupported value {value!r} in a profile")


def set_args(overlay: dict) -> list[str]:
    """``-S key=value`` arguments for ``dvc exp run``."""
    return [a for key, value in settings(overlay) for a in ("-S", f"{key}={override_value(value)}")]


def apply(params_path: Path, overlay: dict) -> list[str]:
    """Write ``overlay`` into ``params_path`` in place, comments and order kept (round-trip YAML);
    returns the keys whose value changed. A key the file lacks is added to its section."""
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedSeq

    rt = YAML()
    rt.preserve_quotes = True
    rt.width = 4096
    doc = rt.load(params_path.read_text(encoding="utf-8"))
    changed = []
    for key, value in settings(overlay):
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            if part not in node:
                node[part] = {}
            node = node[part]
        if node.get(leaf, object()) != value:
            if isinstance(value, list):  # as params.yaml writes lists: [a, b]
                value = CommentedSeq(value)
                value.fa.set_flow_style()
            node[leaf] = value
            changed.append(key)
    with atomic_path(params_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        rt.dump(doc, f)
    return changed


def command(args) -> dict:
    """List, show, apply or run a profile."""
    import subprocess
    import sys

    from fsku.config import load_params

    root = Path(".")
    if args.action == "list":
        return {"profiles": sorted(p.stem for p in (root / PROFILES).glob("*.yaml"))}
    if not args.name:
        raise ConfigError(f"profile {args.action}: name a profile (python -m fsku.profile list)")
    path = profile_path(args.name, root)
    overlay = load_profile(path)
    params_path = Path(args.params)
    check(load_params(params_path), overlay, str(path))
    if args.action == "show":
        return {"profile": overlay["profile"], "file": str(path), "settings": [f"{k}={override_value(v)}"
                                                                              for k, v in settings(overlay)]}
    if args.action == "apply":
        changed = apply(params_path, overlay)
        return {"profile": overlay["profile"], "params": str(params_path), "changed": changed,
                "next": "dvc repro (or dvc exp run)"}
    cmd = [sys.executable, "-m", "dvc", "exp", "run", "-n", args.exp_name or overlay["profile"],
           *set_args(overlay), *(["--queue"] if args.queue else []), *args.dvc_args]
    print(" ".join(cmd[1:]), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd).returncode
    if rc:
        raise ValueError(f"dvc exp run under profile {overlay['profile']} failed (exit {rc})")
    return {"profile": overlay["profile"], "experiment": args.exp_name or overlay["profile"],
            "queued": bool(args.queue)}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json
    import sys

    p = argparse.ArgumentParser(prog="python -m fsku.profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["list", "show", "apply", "run"])
    p.add_argument("name", nargs="?", help="profile name (configs/profiles/NAME.yaml) or a YAML file")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--queue", action="store_true", help="run: queue the experiment instead (dvc queue start)")
    p.add_argument("-n", "--exp-name", default=None, help="run: experiment name (default: the profile's)")
    p.add_argument("dvc_args", nargs="*", help="run: more dvc exp run arguments, after --")
    args = p.parse_args(argv)
    try:
        result = command(args)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
