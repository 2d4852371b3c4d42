"""Stage `predict`: data/raw/test.csv -> submission.csv with the quantized model, a sidecar
data/predict/predictions.jsonl and metrics/predict.json (timings, fallbacks, and the answer checks:
`collapsed` when one option is over 60% of the MCQ answers, the MCQ answer distribution, and the
degenerate open answers the fallback replaced). The same as

    python -m fsku predict --model models/quantized --test data/raw/test.csv --out submission.csv

An interrupted run, rerun, resumes from the answers cached in data/predict/cache/.
"""

import sys

from fsku.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", "--model", "models/quantized", "--test", "data/raw/test.csv", "--out", "submission.csv",
                   "--sidecar", "data/predict/predictions.jsonl", "--metrics", "metrics/predict.json",
                   *sys.argv[1:]]))
