"""Semantic textual similarity: correlation between embedding similarities and human scores (calibrated-similarity
paper sec. 3.1: Spearman of the cosine; multi-task paper sec. 3.5: Pearson of the angular similarity)."""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..metrics import load_metric
from .common import EmbedFn, embed_distinct, l2_normalize, read_tsv


class SimilarityEvaluator:
    """Spearman and Pearson correlation between the cosine similarity of each pair's embeddings and its human score;
    with `angular=True` the similarity is -arccos(cosine) instead, which changes Pearson only.

    The two sides of a pair may be in different languages (cross-lingual STS): `embed` sees plain texts either way.
    """

    def __init__(
        self,
        text1: Sequence[str],
        text2: Sequence[str],
        scores: Sequence[float],
        name: str = "sts",
        angular: bool = False,
    ):
        if not len(text1) == len(text2) == len(scores):
            raise ValueError(
                f"text1, text2 and scores have different lengths ({len(text1)}, {len(text2)}, {len(scores)}): "
                "pass one first text, one second text and one score per pair."
            )
        if len(scores) < 2:
            raise ValueError(f"Got {len(scores)} scored pairs: a correlation needs at least 2.")
        for index, score in enumerate(scores):
            if math.isnan(score):
                raise ValueError(
                    f"The score of pair {index} ({text1[index]!r}, {text2[index]!r}) is NaN: drop or fix that pair."
                )
        self.text1, self.text2 = list(text1), list(text2)
        self.scores = [float(score) for score in scores]
        self.name, self.angular = name, angular
        self.metric = load_metric("spearman")

    @classmethod
    def from_tsv(
        cls,
        path: str | Path,
        name: str | None = None,
        languages: tuple[str, str] | None = None,
        limit: int | None = None,
        angular: bool = False,
    ) -> "SimilarityEvaluator":
        """Pairs of a TSV with columns `text1, text2, score, lang1, lang2`; `languages=(lang1, lang2)` keeps only
        the pairs of that (ordered) language pair. `name` defaults to the file name, plus the language pair if any."""
        where = None if languages is None else {"lang1": languages[0], "lang2": languages[1]}
        table = read_tsv(path, ["text1", "text2", "score", "lang1", "lang2"], limit=limit, where=where)
        scores = []
        for text1, text2, score in zip(table["text1"], table["text2"], table["score"]):
            try:
                scores.append(float(score))
            except ValueError:
                raise ValueError(f"{path}: the score of ({text1!r}, {text2!r}) is {score!r}, not a number.") from None
        if name is None:
            name = Path(path).stem + (f"_{languages[0]}-{languages[1]}" if languages else "")
        return cls(table["text1"], table["text2"], scores, name=name, angular=angular)

    def __call__(self, embed: EmbedFn) -> dict[str, float]:
        groups = {"text1": self.text1, "text2": self.text2}
        first, second = (
            l2_normalize(vectors, f"{name} embeddings", np.float64)
            for name, vectors in zip(groups, embed_distinct(embed, groups, dtype=np.float64))
        )
        similarities = (first * second).sum(axis=1)
        if self.angular:
            # multi-task paper sec. 3.5: sim(u, v) = -arccos(uv / (|u| |v|))
            similarities = -np.arccos(np.clip(similarities, -1.0, 1.0))
        result = self.metric.compute(predictions=similarities.tolist(), references=self.scores)
        return {f"{self.name}_spearman": result["spearman"], f"{self.name}_pearson": result["pearson"]}
