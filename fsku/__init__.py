"""FSKU pipeline library: knowledge base, generation, distillation and evaluation for Korean
financial-security question answering. Stage entry points live in ``stages/``."""

__version__ = "0.1.0"
