"""The DVC stages' entry points (``python -m stages.<name>``). Importing the package pins the CPU math
kernels before any stage loads torch (``fsku/kernels.py``)."""

from fsku.kernels import pin_cpu_kernels

pin_cpu_kernels()
