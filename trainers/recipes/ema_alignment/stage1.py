"""Stage 1 of Ham & Kim ("Semantic Alignment with Calibrated Similarity for Multilingual Sentence Embedding",
sec. 5.1): fine-tune a sentence encoder on pairs of pivot-language sentences with gold similarity scores, by the
mean squared error between the cosine of the two embeddings and the score (SBERT's regression objective), before
the EMA alignment of stage 2 (`trainer.py`).

Data are `(text1, text2, score)` rows in any local format the package reads (TSV, CSV, JSONL, Parquet, optionally
gzipped), such as the STS benchmark (scores 0-5) or the similarity sets of `../shared/data/similarity` (whose
`lang1, lang2` columns are ignored). Scores are mapped linearly from the data's own scale (`score_range`) to the
range the cosine is fitted to (`target_range`: [0, 1] as SBERT does for STS-B, or [-1, 1]).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import datasets
import torch
from transformers import PreTrainedTokenizerBase, Trainer

from ...arguments import EncoderTrainingArguments
from ...collators import ParallelPairCollator
from ...data import add_token_lengths, data_file, read_data_file
from ...encoding import sentence_embeddings
from ...layout import PairLayout
from ...length_grouping import LengthGroupingMixin
from ...loss_logging import LossTermLoggingMixin
from ...losses import cosine_similarity_loss

SCORED_PAIR_COLUMNS = ("text1", "text2", "score")
TARGET_RANGES = ((0.0, 1.0), (-1.0, 1.0))


def check_range(value, name: str) -> tuple[float, float]:
    """`value` as a `(low, high)` pair of finite numbers with low < high."""
    try:
        low, high = (float(bound) for bound in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r}: give the two ends [low, high] of the scale, e.g. [0, 5] for the STS "
                         "benchmark.") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"{name}={value!r}: the low end must be below the high end, both finite numbers.")
    return low, high


def load_scored_pairs(source: str | Path, score_range, target_range=(0.0, 1.0)) -> datasets.Dataset:
    """`(text1, text2, score)` pairs from a local file, each score mapped linearly from `score_range` (the data's
    scale, e.g. `[0, 5]` for STS-B, `[0, 50]` for MEN) to `target_range` (`[0, 1]` or `[-1, 1]`).

    Raises a `ValueError` naming the file and row for a missing column, an empty text, or a score that is not a
    number or lies outside `score_range`."""
    low, high = check_range(score_range, "score_range")
    target = check_range(target_range, "target_range")
    if target not in TARGET_RANGES:
        raise ValueError(f"target_range={list(target_range)!r}: fit the cosine to [0, 1] (SBERT's STS-B scaling) or "
                         "to [-1, 1], the cosine's whole range.")
    path = data_file(source)
    if not path.is_file():
        raise ValueError(f"{source}: scored pairs are read from one file (TSV, CSV, JSONL or Parquet), not a folder.")
    table = read_data_file(path)
    missing = [column for column in SCORED_PAIR_COLUMNS if column not in table.column_names]
    if missing:
        raise ValueError(f"{source} lacks the columns {missing} (it has {table.column_names}); scored pairs need "
                         f"{list(SCORED_PAIR_COLUMNS)}: two texts and their gold similarity.")
    if len(table) == 0:
        raise ValueError(f"{source} has no rows: no scored pairs to train on.")
    table = table.select_columns(list(SCORED_PAIR_COLUMNS))
    scores = []
    for index, row in enumerate(table):
        for column in ("text1", "text2"):
            if not isinstance(row[column], str) or not row[column].strip():
                raise ValueError(f"{source}, row {index}: {column} is {row[column]!r}; every pair needs two non-empty "
                                 "texts. Remove or fix that row.")
        try:
            score = float(row["score"])
        except (TypeError, ValueError):
            score = math.nan
        if not low <= score <= high:  # also refuses NaN
            raise ValueError(f"{source}, row {index} ({row['text1']!r}, {row['text2']!r}): score {row['score']!r} is "
                             f"outside score_range [{low:g}, {high:g}]; set score_range to the data's scale, or fix "
                             "that row.")
        scores.append(target[0] + (score - low) / (high - low) * (target[1] - target[0]))
    return table.remove_columns("score").add_column("score", scores)


def add_pair_lengths(pairs: datasets.Dataset, tokenizer, column: str = "length") -> datasets.Dataset:
    """Scored pairs with the longer text's token count as `column`, for length-grouped batching."""
    renamed = pairs.rename_columns({"text1": "src", "text2": "tgt"})
    return add_token_lengths(renamed, tokenizer, column).rename_columns({"src": "text1", "tgt": "text2"})


@dataclass
class ScoredPairCollator:
    """Tokenize scored pairs into one `PairLayout` batch: rows `0..n-1` the `text1`s, `n..2n-1` their `text2`s,
    and `scores` (`(n,)`, float32), the gold scores already in the cosine's range."""

    tokenizer: PreTrainedTokenizerBase
    max_length: int

    def __post_init__(self):
        self._pairs = ParallelPairCollator(self.tokenizer, self.max_length)

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        batch = self._pairs([{"src": f["text1"], "tgt": f["text2"]} for f in features])
        batch["scores"] = torch.tensor([f["score"] for f in features], dtype=torch.float32)
        return batch


class SimilarityTrainer(LengthGroupingMixin, LossTermLoggingMixin, Trainer):
    """Trains a sentence encoder on `ScoredPairCollator` batches: the cosine of each pair's embeddings fitted to its
    gold score by MSE (sec. 5.1); logs `similarity_loss`. Trains on one process or DDP."""

    def __init__(self, model, args: EncoderTrainingArguments, **kwargs):
        if not isinstance(args, EncoderTrainingArguments):
            raise TypeError(f"SimilarityTrainer takes EncoderTrainingArguments, got {type(args).__name__}.")
        super().__init__(model=model, args=args, **kwargs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        embeddings = sentence_embeddings(model, inputs, self.args.pooling)  # both sides in one forward pass
        first, second = PairLayout.split(embeddings)
        loss = cosine_similarity_loss(first, second, inputs["scores"])  # sec. 5.1
        self.record_loss_terms({"similarity_loss": loss})
        return (loss, {"first": first, "second": second}) if return_outputs else loss
