"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> str:
    """The CPU, whether it has AVX-512 (vLLM's CPU build and torch run about twice as fast with it)
    and AMX / AVX512-BF16 (bfloat16 in hardware: fsku.kernels), the core count and Python: what every
    timing in RESULTS.md is read against."""
    cpu, simd = "unknown CPU", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and cpu == "unknown CPU":
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not simd:
                flags = line.split(":", 1)[1].split()
                simd = "AVX-512" if "avx512f" in flags else "AVX2, no AVX-512" if "avx2" in flags else "no AVX2"
                simd += ", AMX" if "amx_bf16" in flags else ", no AMX"
                simd += ", AVX512-BF16" if "avx512_bf16" in flags else ""
    except OSError:
        pass
    return f"{cpu} ({simd or 'flags unknown'}), {os.cpu_count()} cores, Python {platform.python_version()}"


def pct(values, q: float) -> float:
    import numpy as np

    return float(np.percentile(np.asarray(values), q))
