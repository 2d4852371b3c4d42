"""FSKU pipeline library: knowledge base, generation, distillation and evaluation for Korean
financial-security question answering. Stage entry points live in ``stages/``.

``LAYERS``, lowest first: a module or package reaches only into layers below its own (each stage's
DVC code deps are its closure, so a reach upward or sideways would rerun stages for code they
never run). ``tests/test_dvc.py`` holds the tree to it."""

__version__ = "0.1.0"

LAYERS = (
    ("io", "config", "kernels", "embedded"),                       # atomic outs, typed params, kernel pin, weights
    ("stage", "gguf", "questions"),                                # stage entry, GGUF files, question files
    ("scoring", "chunking", "corpus", "embedding", "models"),       # answers, documents, encoder, model dirs
    ("retrieval", "gen", "quantize"),                              # search, prompts and generation, quantizing
    ("distill", "metric", "synth"),                                # training (on gen's formats), the FSKU metric,
                                                                   # teacher-written questions and their gate
    ("predict",),                                                  # answering and evaluation rows
    ("cli", "profile"),                                            # the commands
    ("__main__",),                                                 # python -m fsku
)
