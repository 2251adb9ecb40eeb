"""Spearman and Pearson correlation between predicted and gold scores (semantic textual similarity)."""

import datasets
import evaluate
import numpy as np
from scipy.stats import pearsonr, spearmanr

_DESCRIPTION = """
Spearman rank correlation and Pearson linear correlation between predicted scores (e.g. cosine similarities
of sentence embeddings) and gold scores (e.g. human similarity ratings), the usual semantic textual
similarity (STS) evaluation. Computed with `scipy.stats.spearmanr` and `scipy.stats.pearsonr`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): predicted scores, finite.
    references (`list` of `float`): gold scores, finite.
Returns:
    spearman (`float`): Spearman rank correlation, in [-1, 1].
    pearson (`float`): Pearson correlation, in [-1, 1].
Examples:
    >>> spearman = evaluate.load("trainers/metrics/spearman")
    >>> spearman.compute(predictions=[0.1, 0.4, 0.9], references=[1.0, 2.0, 3.0])
    {'spearman': 1.0, 'pearson': 0.989743318610787}
"""

_CITATION = """
@article{spearman1904proof,
  title={The proof and measurement of association between two things},
  author={Spearman, Charles},
  journal={The American Journal of Psychology},
  volume={15},
  number={1},
  pages={72--101},
  year={1904}
}
@inproceedings{reimers2016task,
  title={Task-Oriented Intrinsic Evaluation of Semantic Textual Similarity},
  author={Reimers, Nils and Beyer, Philip and Gurevych, Iryna},
  booktitle={Proceedings of COLING 2016},
  pages={87--96},
  year={2016}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Spearman(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("float64"), "references": datasets.Value("float64")}
            ),
            reference_urls=["https://docs.scipy.org/doc/scipy/reference/generated/scipy.stats.spearmanr.html"],
        )

    def _compute(self, predictions, references):
        if len(predictions) < 2:
            raise ValueError(f"spearman needs at least 2 scored pairs, got {len(predictions)}.")
        for side, values in (("predictions", predictions), ("references", references)):
            values = np.asarray(values, dtype=np.float64)
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise ValueError(
                    f"spearman: {side}[{bad[0]}] is {values[bad[0]]}; all scores must be finite, "
                    "drop or fix that pair."
                )
            if values.min() == values.max():
                raise ValueError(
                    f"spearman: all {side} equal {values[0]}, so the correlation is undefined; "
                    "evaluate on pairs whose scores vary."
                )
        return {
            "spearman": float(spearmanr(predictions, references).statistic),
            "pearson": float(pearsonr(predictions, references).statistic),
        }
