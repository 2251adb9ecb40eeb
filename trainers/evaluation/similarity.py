"""Semantic textual similarity: correlation between embedding similarities and human scores (calibrated-similarity
paper sec. 3.1: Spearman of the cosine; multi-task paper sec. 3.5: Pearson of the angular similarity)."""

import csv
import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from trainers.metrics import load_metric

EmbedFn = Callable[[list[str]], np.ndarray]


def read_tsv(
    path: str | Path, columns: Sequence[str], limit: int | None = None, where: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """`columns` of the first `limit` rows (all when None) of a headed, tab-separated file, column by column,
    keeping only the rows whose values equal those of `where`."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit is {limit}: pass a positive number of rows, or None for the whole file.")
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        if reader.fieldnames is None:
            raise ValueError(f"{path} is empty: expected a header with the columns {list(columns)} and rows.")
        missing = [column for column in columns if column not in reader.fieldnames]
        if missing:
            raise ValueError(
                f"{path} lacks the columns {missing} (it has {reader.fieldnames}): write a header with {list(columns)}."
            )
        table = {column: [] for column in columns}
        for line, row in enumerate(reader, start=2):
            if len(table[columns[0]]) == limit:
                break
            if None in row.values():
                raise ValueError(
                    f"{path}, line {line} has fewer fields than the header {reader.fieldnames}: fix that row."
                )
            if all(row[column] == value for column, value in (where or {}).items()):
                for column in columns:
                    table[column].append(row[column])
    if not table[columns[0]]:
        condition = f" with {where}" if where else ""
        raise ValueError(f"{path} has no rows{condition}: nothing to evaluate on.")
    return table


def embed_distinct(embed: EmbedFn, *groups: Sequence[str]) -> list[np.ndarray]:
    """Embed every distinct text of `groups` once and return one `(len(group), dim)` array per group."""
    distinct = list(dict.fromkeys(text for group in groups for text in group))
    vectors = np.asarray(embed(distinct), dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] != len(distinct):
        raise ValueError(
            f"embed returned an array of shape {vectors.shape} for {len(distinct)} texts: "
            "it must return one row per text, shape (len(texts), dim)."
        )
    if not np.isfinite(vectors).all():
        raise ValueError("embed returned NaN or infinite values: check the model and its inputs.")
    index = {text: row for row, text in enumerate(distinct)}
    return [vectors[[index[text] for text in group]] for group in groups]


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


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
        first, second = embed_distinct(embed, self.text1, self.text2)
        similarities = (normalize_rows(first) * normalize_rows(second)).sum(axis=1)
        if self.angular:
            # multi-task paper sec. 3.5: sim(u, v) = -arccos(uv / (|u| |v|))
            similarities = -np.arccos(np.clip(similarities, -1.0, 1.0))
        result = self.metric.compute(predictions=similarities.tolist(), references=self.scores)
        return {f"{self.name}_spearman": result["spearman"], f"{self.name}_pearson": result["pearson"]}
