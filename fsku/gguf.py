"""GGUF files: a lean reader (the tensor table, numeric fields, one tensor at a time), the tokenizer
and the model converted from one (the embedded files themselves, pinned: ``fsku.embedded``).

``gguf.GGUFReader`` builds a numpy view for every part of every field, which for a 262k-token
vocabulary costs about 15 seconds of pure Python before the first tensor can be read. The encoder
needs one tensor and one numeric array, so this walks the header once with ``struct`` (string
arrays are skipped by their lengths) and hands tensor bytes to ``gguf.quants.dequantize``.
Layout: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md (version 2 and 3)."""

from __future__ import annotations

import hashlib
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# value type -> (struct format, numpy dtype) for the fixed-size scalar types
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16), 3: ("<h", np.int16),
            4: ("<I", np.uint32), 5: ("<i", np.int32), 6: ("<f", np.float32), 7: ("<?", np.bool_),
            10: ("<Q", np.uint64), 11: ("<q", np.int64), 12: ("<d", np.float64)}
_STRING, _ARRAY = 8, 9


@dataclass
class TensorInfo:
    name: str
    shape: tuple[int, ...]   # numpy order (outermost first): GGUF stores the innermost first
    ggml_type: int
    offset: int              # absolute, in the file


@dataclass
class GGUFFile:
    path: Path
    fields: dict[str, object] = field(default_factory=dict)  # scalars, strings, numeric arrays; string arrays -> length
    tensors: dict[str, TensorInfo] = field(default_factory=dict)
    header_end: int = 0      # end of the key/value metadata (the tokenizer lives there)
    version: int = 3
    n_tensors: int = 0       # as the header says (the tensor table is copied whole)
    spans: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # key -> (value type, first byte, end)
    infos_end: int = 0       # end of the tensor table
    data_start: int = 0      # first byte of the (aligned) tensor data

    def metadata_digest(self) -> str:
        """sha256 of the header's key/value metadata: what a tokenizer converted from it depends on."""
        with open(self.path, "rb") as f:
            return hashlib.sha256(f.read(self.header_end)).hexdigest()

    def tensor(self, name: str) -> np.ndarray:
        """The named tensor as float32 (dequantised when quantised)."""
        from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType
        from gguf.quants import dequantize

        if name not in self.tensors:
            raise ValueError(f"{self.path}: no {name} tensor")
        info = self.tensors[name]
        qtype = GGMLQuantizationType(info.ggml_type)
        block, type_size = GGML_QUANT_SIZES[qtype]
        rows, width = int(np.prod(info.shape[:-1])), info.shape[-1]
        row_bytes = width // block * type_size
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            raw = np.frombuffer(mm, dtype=np.uint8, count=rows * row_bytes, offset=info.offset).copy()
        if qtype in (GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16):
            data = raw.view({GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16,
                             GGMLQuantizationType.BF16: np.uint16}[qtype]).reshape(rows, width)
            if qtype == GGMLQuantizationType.BF16:
                return (data.astype(np.uint32) << 16).view(np.float32).reshape(info.shape)
            return data.astype(np.float32).reshape(info.shape)
        return np.asarray(dequantize(raw.reshape(rows, row_bytes), qtype), dtype=np.float32).reshape(info.shape)


def read_gguf(path: str | Path) -> GGUFFile:
    path = Path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
        if mm[:4] != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", mm, 4)
        if version not in (2, 3):
            raise ValueError(f"{path}: GGUF version {version} is not supported (2 or 3)")
        pos = 24
        out = GGUFFile(path)

        def string(pos: int) -> tuple[str, int]:
            (n,) = struct.unpack_from("<Q", mm, pos)
            return mm[pos + 8:pos + 8 + n].decode("utf-8", errors="replace"), pos + 8 + n

        def value(vtype: int, pos: int) -> tuple[object, int]:
            if vtype in _SCALARS:
                fmt = _SCALARS[vtype][0]
                return struct.unpack_from(fmt, mm, pos)[0], pos + struct.calcsize(fmt)
            if vtype == _STRING:
                return string(pos)
            if vtype == _ARRAY:
                item, count = struct.unpack_from("<IQ", mm, pos)
                pos += 12
                if item in _SCALARS:
                    dtype = np.dtype(_SCALARS[item][1])
                    arr = np.frombuffer(mm, dtype=dtype, count=count, offset=pos).copy()
                    return arr, pos + count * dtype.itemsize
                if item == _STRING:  # skipped by their lengths (the vocabulary: nobody here needs it)
                    for _ in range(count):
                        pos += 8 + struct.unpack_from("<Q", mm, pos)[0]
                    return count, pos
                items = []
                for _ in range(count):
                    v, pos = value(item, pos)
                    items.append(v)
                return items, pos
            raise ValueError(f"{path}: unknown GGUF value type {vtype} at byte {pos}")

        out.version, out.n_tensors = version, n_tensors
        for _ in range(n_kv):
            start = pos
            key, pos = string(pos)
            (vtype,) = struct.unpack_from("<I", mm, pos)
            out.fields[key], pos = value(vtype, pos + 4)
            out.spans[key] = (vtype, start, pos)
        out.header_end = pos
        infos = []
        for _ in range(n_tensors):
            name, pos = string(pos)
            (n_dims,) = struct.unpack_from("<I", mm, pos)
            dims = struct.unpack_from(f"<{n_dims}Q", mm, pos + 4)
            ggml_type, offset = struct.unpack_from("<IQ", mm, pos + 4 + 8 * n_dims)
            pos += 4 + 8 * n_dims + 12
            infos.append((name, tuple(int(d) for d in reversed(dims)), ggml_type, offset))
        align = int(out.fields.get("general.alignment", 32))
        out.infos_end, data_start = pos, pos + (-pos % align)
        out.data_start = data_start
        for name, shape, ggml_type, offset in infos:
            out.tensors[name] = TensorInfo(name, shape, ggml_type, data_start + offset)
    return out


def write_model_only(path: str | Path, dst: str | Path) -> Path:
    """A copy of the GGUF file at ``dst`` without the tokenizer's arrays (vocabulary, scores, token
    types, merges), its vocabulary size written as ``<arch>.vocab_size`` instead: what
    ``transformers`` needs to build the model. Its GGUF loader parses every field with
    ``gguf.GGUFReader``, about 15 seconds for a 262k-token vocabulary, and twice per model load
    (config, then weights); the tokenizer comes from ``load_tokenizer`` instead. Tensor table and
    data are copied byte for byte (their offsets are relative to the data start)."""
    src = read_gguf(path)
    arch = src.fields.get("general.architecture")
    drop = [k for k, (vtype, _, _) in src.spans.items() if vtype == _ARRAY and k.startswith("tokenizer.")]
    extra = b""
    vocab_key = f"{arch}.vocab_size"
    if arch and vocab_key not in src.fields and "tokenizer.ggml.tokens" in src.fields:
        name = vocab_key.encode()
        extra = struct.pack("<Q", len(name)) + name + struct.pack("<II", 4, int(src.fields["tokenizer.ggml.tokens"]))
    kept = [k for k in src.spans if k not in drop]
    align = int(src.fields.get("general.alignment", 32))
    with open(src.path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm, open(dst, "wb") as out:
        out.write(b"GGUF" + struct.pack("<IQQ", src.version, src.n_tensors, len(kept) + bool(extra)))
        for k in kept:
            out.write(mm[src.spans[k][1]:src.spans[k][2]])
        out.write(extra)
        out.write(mm[src.header_end:src.infos_end])
        out.write(b"\0" * (-out.tell() % align))
        for start in range(src.data_start, len(mm), 1 << 26):
            out.write(mm[start:min(len(mm), start + (1 << 26))])
    return Path(dst)


CONVERSION = "v2"  # v2: the GGUF's add_bos_token / add_eos_token applied (v1 dropped them)


def load_tokenizer(path: str | Path):
    """The transformers tokenizer of a GGUF file. Converting it from the GGUF metadata takes about
    20 seconds for a 262k vocabulary, so the converted tokenizer is kept in the user cache, keyed
    by the sha256 of the metadata and the transformers and tokenizers versions (the conversion's
    inputs); it is written atomically, so concurrent processes at worst convert twice."""
    import os
    import shutil
    import tempfile

    import tokenizers
    import transformers
    from transformers import AutoTokenizer

    from fsku.embedded import cache_root
    from fsku.io import save_tokenizer

    path = Path(path)
    gguf = read_gguf(path)
    key = f"{gguf.metadata_digest()[:32]}-tf{transformers.__version__}-tk{tokenizers.__version__}-{CONVERSION}"
    cached = cache_root() / "gguf-tokenizers" / key
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(str(cached))
    tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # transformers' conversion drops the file's add_bos_token / add_eos_token: a Gemma fed without its
    # BOS is another model (perplexity 95 against 12 on the corpus for Gemma 3 270M)
    for flag in ("add_bos_token", "add_eos_token"):
        value = gguf.fields.get(f"tokenizer.ggml.{flag}")
        if value is not None:
            setattr(tokenizer, flag, bool(value))
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
        save_tokenizer(tokenizer, tmp)
        try:
            os.rename(tmp, cached)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:  # a read-only home: convert every time
        pass
    return tokenizer


def load_model(path: Path, dtype):
    """(model, tokenizer) from a GGUF file, dequantised by transformers into a plain model that saves
    as safetensors (``dtype``: a torch dtype)."""
    import tempfile

    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory(prefix="fsku-gguf-") as tmp:  # held until the weights are copied
        lean = write_model_only(path, Path(tmp) / path.name)
        try:
            quantized = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=lean.name, dtype=dtype)
        except ValueError as e:  # "GGUF model with architecture X is not supported yet."
            if "not supported" not in str(e):
                raise
            arch = read_gguf(path).fields.get("general.architecture")
            raise ValueError(f"{path}: transformers cannot load a GGUF of architecture {arch!r} "
                             f"({str(e).splitlines()[0][:200]})") from None
        model = plain_model(quantized)
    return model, load_tokenizer(path)  # converted once, then from the user cache


def plain_model(quantized):
    """The same weights as a plain model: a GGUF-loaded one is marked quantised and refuses to save.
    Built on the meta device and handed the state dict, then the non-persistent buffers (the rotary
    ``inv_freq``), which no state dict holds: left on meta, ``generate()`` on the returned model
    fails ("Cannot copy out of meta tensor")."""
    import torch

    config = quantized.config.to_dict()
    config.pop("quantization_config", None)
    config = type(quantized.config).from_dict(config)
    with torch.device("meta"):
        model = type(quantized)(config)
    state = quantized.state_dict()
    model.load_state_dict({k: v.clone() for k, v in state.items()}, assign=True)
    for name, buf in quantized.named_buffers():
        if name not in state:
            owner, _, attr = name.rpartition(".")
            model.get_submodule(owner).register_buffer(attr, buf.clone(), persistent=False)
    model.tie_weights()
    return model.eval()
