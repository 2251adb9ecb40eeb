"""Retrieval precision@k: share of queries whose gold candidate is ranked among the first k."""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """
Precision@k for retrieval with one gold candidate per query (e.g. finding the translation of a sentence
among all target sentences, as in the Tatoeba similarity search task): the share of queries whose gold
candidate id is among the first k ids of the ranking. P@1 is the accuracy of nearest-neighbour retrieval.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): per query, the candidate ids ranked best first.
    references (`list` of `int`): per query, the gold candidate id.
    k (`int` or `list` of `int`, default 1): cut-off(s); every ranking must hold at least max(k) ids.
Returns:
    precision_at_<k> (`float`): one key per k, in [0, 1].
Examples:
    >>> precision_at_k = evaluate.load("trainers/metrics/precision_at_k")
    >>> precision_at_k.compute(predictions=[[3, 1, 2], [0, 2, 1]], references=[1, 0], k=[1, 2])
    {'precision_at_1': 0.5, 'precision_at_2': 1.0}
"""

_CITATION = """
@article{artetxe2019massively,
  title={Massively Multilingual Sentence Embeddings for Zero-Shot Cross-Lingual Transfer and Beyond},
  author={Artetxe, Mikel and Schwenk, Holger},
  journal={Transactions of the Association for Computational Linguistics},
  volume={7},
  pages={597--610},
  year={2019}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PrecisionAtK(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
            ),
            reference_urls=["https://github.com/facebookresearch/LASER/tree/main/tasks/similarity"],
        )

    def _compute(self, predictions, references, k=1):
        if len(predictions) == 0:
            raise ValueError("precision_at_k got no queries: pass at least one ranking and its gold id.")
        ks = [k] if np.isscalar(k) else list(k)
        if not ks or any(not isinstance(cut, (int, np.integer)) or cut < 1 for cut in ks):
            raise ValueError(f"precision_at_k: k must be a positive int or a non-empty list of them, got {k!r}.")
        ks = sorted({int(cut) for cut in ks})
        for query, ranking in enumerate(predictions):
            if len(ranking) < ks[-1]:
                raise ValueError(
                    f"precision_at_k: k={ks[-1]} but the ranking of query {query} holds only {len(ranking)} ids; "
                    "rank at least max(k) candidates per query or lower k."
                )
        top = np.array([ranking[: ks[-1]] for ranking in predictions])
        hits = top == np.asarray(references)[:, None]
        return {f"precision_at_{cut}": float(hits[:, :cut].any(axis=1).mean()) for cut in ks}
