"""Bitext mining precision, recall and F1 (BUCC shared task protocol)."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Precision, recall and F1 of mined sentence pairs against gold translation pairs, as in the BUCC shared task
on spotting parallel sentences in comparable corpora. Inputs are given per source sentence, so that at most
one target is mined for and aligned to each source: predictions[i] is the id of the target mined for source
i (-1 when none was extracted), references[i] the id of its gold translation (-1 when it has none).
precision = correct pairs / extracted pairs, recall = correct pairs / gold pairs, F1 their harmonic mean;
a ratio with a zero denominator is 0.0.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `int`): per source sentence, the mined target id, or -1 when none was extracted.
    references (`list` of `int`): per source sentence, the gold target id, or -1 when it has no translation.
Returns:
    precision (`float`), recall (`float`), f1 (`float`): each in [0, 1].
Examples:
    >>> bitext_mining = evaluate.load("trainers/metrics/bitext_mining")
    >>> bitext_mining.compute(predictions=[4, 7, -1, 2], references=[4, 5, 6, -1])
    {'precision': 0.3333333333333333, 'recall': 0.3333333333333333, 'f1': 0.3333333333333333}
"""

_CITATION = """
@inproceedings{zweigenbaum2017overview,
  title={Overview of the Second {BUCC} Shared Task: Spotting Parallel Sentences in Comparable Corpora},
  author={Zweigenbaum, Pierre and Sharoff, Serge and Rapp, Reinhard},
  booktitle={Proceedings of the 10th Workshop on Building and Using Comparable Corpora},
  pages={60--67},
  year={2017}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class BitextMining(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://comparable.limsi.fr/bucc2017/bucc2017-task.html"],
        )

    def _compute(self, predictions, references):
        if len(predictions) == 0:
            raise ValueError("bitext_mining got no source sentences: pass one prediction and reference per source.")
        predictions, references = np.asarray(predictions), np.asarray(references)
        for side, values in (("predictions", predictions), ("references", references)):
            bad = np.flatnonzero(values < -1)
            if bad.size:
                raise ValueError(
                    f"bitext_mining: {side}[{bad[0]}] is {values[bad[0]]}; target ids are >= 0, "
                    "and -1 marks a source without a target."
                )
        extracted, gold = predictions != -1, references != -1
        correct = int((extracted & (predictions == references)).sum())
        precision = correct / extracted.sum() if extracted.any() else 0.0
        recall = correct / gold.sum() if gold.any() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
        return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
