"""Which CPU math kernels the stages use, and the compute dtype that goes with them.

The libraries pick kernels by processor: ATen's vectorised ops by CPU capability (AVX-512 here,
AVX2 on an AMD EPYC Zen 3), MKL's BLAS by code path, oneDNN by instruction set. Each choice sums in
another order, so outs from float math differ between such machines. ``FSKU_CPU_KERNELS``:

- ``portable``: pinned to AVX2 (what x86-64 CPUs of the last decade have): ``ATEN_CPU_CAPABILITY=avx2``,
  ``MKL_CBWR=AVX2`` (MKL's conditional numerical reproducibility), ``ONEDNN_MAX_CPU_ISA=AVX2``; float32
  outs then match across x86-64 CPUs. AVX2 has no bfloat16 arithmetic: a bf16 model there is
  emulated, 36x slower than with AMX for a 1.5B model's prompt pass (benchmarks/RESULTS.md).
- ``native``: the libraries' own choice (AMX and AVX512-BF16 where the CPU has them); outs match
  only runs on the same kind of CPU.
- ``auto`` (the default): native on a CPU with native bfloat16 arithmetic (``amx_bf16`` or
  ``avx512_bf16``), where the default models compute in bf16; portable elsewhere.

They are read when torch loads, so ``stages/__init__.py`` (and ``python -m fsku``) set them before
anything imports it. A CPU without AVX2 and FMA, or not x86-64, is left to the libraries (torch
would take the setting on trust and stop on an illegal instruction). ``compute_dtype`` resolves a
model's ``auto`` dtype to the one these kernels run fast. The thread count is the other input of a
float sum's order: compare runs with the same number of cores.
"""

from __future__ import annotations

import os
import platform
import sys

PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpu_flags() -> set[str]:
    """The CPU's feature flags (x86-64 only; empty elsewhere), read from /proc/cpuinfo."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def has_avx2() -> bool:
    """An x86-64 CPU with AVX2 and FMA (what the pinned kernels use)."""
    return {"avx2", "fma"} <= cpu_flags()


def has_native_bf16() -> bool:
    """bfloat16 matrix arithmetic in hardware: AMX tiles or AVX512-BF16 dot products."""
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def kernel_choice(env: dict | None = None) -> str:
    """``portable`` or ``native``: what ``FSKU_CPU_KERNELS`` (default ``auto``) means on this CPU."""
    env = os.environ if env is None else env
    choice = env.get("FSKU_CPU_KERNELS", "auto")
    if choice not in ("auto", "portable", "native"):
        raise ValueError(f"FSKU_CPU_KERNELS: {choice!r} is none of auto, portable, native")
    if choice == "auto":
        return "native" if has_native_bf16() else "portable"
    return choice


def fast_bf16(env: dict | None = None) -> bool:
    """Whether bfloat16 runs at hardware speed on this CPU under the kernels in effect."""
    return has_native_bf16() and (kernel_choice(env) == "native" or not has_avx2())


def compute_dtype(dtype: str, cuda: bool = False) -> str:
    """A model's dtype param as it runs: ``auto`` is bfloat16 on a GPU or where the CPU's kernels do
    bf16 in hardware, else float32 (emulated bf16 is several times slower than float32)."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if cuda or fast_bf16() else "float32"


def pin_cpu_kernels(env: dict | None = None) -> dict[str, str]:
    """Set the portable kernel choice in ``env`` (the process environment: inherited by every child,
    vLLM's engine and DDP workers included) when ``FSKU_CPU_KERNELS`` means portable here and the
    CPU has AVX2; returns what was set. Too late once torch is loaded (then it only reaches child
    processes)."""
    env = os.environ if env is None else env
    if kernel_choice(env) == "native" or not has_avx2():
        return {}
    if "torch" in sys.modules and env is os.environ:
        import logging

        logging.getLogger(__name__).debug("torch already loaded: the kernel choice reaches child processes only")
    replaced = {k: env[k] for k in PORTABLE if k in env and env[k] != PORTABLE[k]}
    if replaced:  # said once, on stderr: a user's own setting is not dropped silently
        print(f"fsku: pinned CPU kernels replace {', '.join(f'{k}={v}' for k, v in replaced.items())} "
              "(FSKU_CPU_KERNELS=native keeps them)", file=sys.stderr)
    env.update(PORTABLE)
    return dict(PORTABLE)


def use_bf16(setting, cuda: bool = False, key: str = "bf16") -> bool:
    """A ``bf16`` param (``auto``, true or false) as it applies here: ``auto`` is true on a GPU or
    where bf16 runs in hardware. Forced on where it is emulated, it says so loudly: it is several
    times slower than float32 there (and 36x under the AVX2 pin)."""
    if setting == "auto":
        return cuda or fast_bf16()
    if setting and not cuda and not fast_bf16():
        import logging

        logging.getLogger(__name__).warning(
            "%s: true, but this CPU runs bfloat16 emulated (%s): expect it several times slower than float32; "
            "%s: auto picks float32 here", key, "kernels pinned to AVX2" if has_native_bf16() else
            "no AMX or AVX512-BF16", key)
    return bool(setting)
