"""Loaded at every Python start-up when ``benchmarks/as_avx2`` put this folder on PYTHONPATH (child
processes too, such as vLLM's engine): torch then reports no AVX-512, AVX-512 BF16/VNNI or AMX, so
vLLM's CPU build loads its AVX2 kernels (``vllm._C_AVX2``) as on a CPU without them. Nothing is
imported until torch.cpu is."""

import importlib.abc
import importlib.util
import os
import sys

_HIDDEN = ("_is_avx512_supported", "_is_avx512_vnni_supported", "_is_avx512_bf16_supported",
           "_is_amx_tile_supported", "_is_amx_fp16_supported")


class _HideAvx512(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "torch.cpu":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            for f in _HIDDEN:
                if hasattr(module, f):
                    setattr(module, f, lambda: False)

        spec.loader.exec_module = exec_module
        return spec


if os.environ.get("FSKU_AS_AVX2") == "1":
    sys.meta_path.insert(0, _HideAvx512())
