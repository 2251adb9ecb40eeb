"""`evaluate` metric modules of the package, one folder per metric, loaded by path (no Hub access needed)."""

from functools import lru_cache
from pathlib import Path

import evaluate

METRICS = ("accuracy", "bitext_mining", "precision_at_k", "qwk", "spearman")

_HERE = Path(__file__).parent


@lru_cache(maxsize=None)
def load_metric(name: str) -> evaluate.EvaluationModule:
    """Load the metric `trainers/metrics/<name>/<name>.py` as an `evaluate` module.

    The module is cached and shared between callers: call `compute(predictions=..., references=...)` in one
    go rather than interleaving `add_batch` calls from different places. It keeps its inputs in memory, so
    concurrent processes never contend for `evaluate`'s cache files.
    """
    if name not in METRICS:
        raise ValueError(f"Unknown metric {name!r}; available metrics: {', '.join(METRICS)}.")
    return evaluate.load(str(_HERE / name / f"{name}.py"), keep_in_memory=True)
