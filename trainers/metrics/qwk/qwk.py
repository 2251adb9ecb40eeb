"""Quadratic weighted kappa (QWK): agreement between two ordinal ratings."""

import datasets
import evaluate
from sklearn.metrics import cohen_kappa_score

_DESCRIPTION = """
Quadratic weighted kappa (Cohen, 1968): Cohen's kappa where a disagreement between labels i and j costs
(i - j)^2, so near misses on an ordinal scale cost less than far ones. 1.0 is perfect agreement, 0.0 is
chance agreement, negative values are worse than chance. Computed with scikit-learn's `cohen_kappa_score`.
Without `num_labels`, the weights are taken over the sorted labels that occur in the inputs (scikit-learn's
behaviour); pass `num_labels` so that a label missing from the inputs still counts in the distances.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): predicted labels.
    references (`list` of `int`): gold labels.
    num_labels (`int`, optional): size of the label scale; labels must then lie in [0, num_labels).
Returns:
    qwk (`float`): quadratic weighted kappa, in [-1, 1].
Examples:
    >>> qwk = evaluate.load("trainers/metrics/qwk")
    >>> qwk.compute(predictions=[0, 1, 2, 2], references=[0, 1, 2, 1], num_labels=3)
    {'qwk': 0.8}
"""

_CITATION = """
@article{cohen1968weighted,
  title={Weighted kappa: Nominal scale agreement provision for scaled disagreement or partial credit},
  author={Cohen, Jacob},
  journal={Psychological Bulletin},
  volume={70},
  number={4},
  pages={213--220},
  year={1968}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class QWK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://scikit-learn.org/stable/modules/generated/sklearn.metrics.cohen_kappa_score.html"],
        )

    def _compute(self, predictions, references, num_labels=None):
        if len(predictions) == 0:
            raise ValueError("qwk got empty predictions and references: pass at least one labelled example.")
        labels = None
        if num_labels is not None:
            if num_labels < 1:
                raise ValueError(f"qwk: num_labels must be a positive int, got {num_labels}.")
            for side, values in (("predictions", predictions), ("references", references)):
                bad = [value for value in values if not 0 <= value < num_labels]
                if bad:
                    raise ValueError(
                        f"qwk: {side} holds label {bad[0]}, outside [0, {num_labels}); "
                        "map labels to 0..num_labels-1 or raise num_labels."
                    )
            labels = list(range(num_labels))
        if len(set(predictions) | set(references)) == 1:
            raise ValueError(
                f"qwk is undefined: predictions and references all hold the single label {predictions[0]}, "
                "so no disagreement is possible; evaluate on examples with more than one label."
            )
        kappa = cohen_kappa_score(references, predictions, labels=labels, weights="quadratic")
        return {"qwk": float(kappa)}
