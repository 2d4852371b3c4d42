"""CPU math kernels pinned to one choice on every x86-64 machine, so float results (and so outs)
do not depend on which CPU ran a stage.

The libraries pick kernels by processor: ATen's vectorised ops by CPU capability (AVX-512 here,
AVX2 on an AMD EPYC Zen 3), MKL's BLAS by code path, oneDNN by instruction set. Each choice sums in
another order, so from ``distill`` on every out differed between such machines. Pinned to AVX2
(what x86-64 CPUs of the last decade have): ``ATEN_CPU_CAPABILITY=avx2``, ``MKL_CBWR=AVX2`` (MKL's
conditional numerical reproducibility), ``ONEDNN_MAX_CPU_ISA=AVX2``. They are read when torch
loads, so ``stages/__init__.py`` (and ``python -m fsku``) set them before anything imports it; what
they cost on an AVX-512 machine is in benchmarks/RESULTS.md. ``FSKU_CPU_KERNELS=native`` leaves the
choice to the libraries (faster there; outs then match only runs on the same kind of CPU). A CPU
without AVX2 and FMA, or not x86-64, is left to the libraries too (torch would take the setting on
trust and stop on an illegal instruction). The thread count is the other input of a float sum's
order: compare runs with the same number of cores.
"""

from __future__ import annotations

import os
import platform
import sys

PORTABLE = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def has_avx2() -> bool:
    """An x86-64 CPU with AVX2 and FMA (what the pinned kernels use), read from /proc/cpuinfo."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return {"avx2", "fma"} <= set(flags)


def pin_cpu_kernels(env: dict | None = None) -> dict[str, str]:
    """Set the portable kernel choice in ``env`` (the process environment: inherited by every child,
    vLLM's engine and DDP workers included) unless ``FSKU_CPU_KERNELS=native`` or the CPU lacks
    AVX2; returns what was set. Too late once torch is loaded (then it only reaches child processes)."""
    env = os.environ if env is None else env
    choice = env.get("FSKU_CPU_KERNELS", "portable")
    if choice not in ("portable", "native"):
        raise ValueError(f"FSKU_CPU_KERNELS: {choice!r} is neither portable nor native")
    if choice == "native" or not has_avx2():
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
