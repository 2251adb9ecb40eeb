"""Batch builders for the trainers, for any encoder and tokenizer the package handles."""

import hashlib
from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from .layout import PairLayout


@dataclass
class ParallelPairCollator:
    """Tokenize parallel pairs (`src, tgt, src_lang, tgt_lang`) into one `PairLayout` batch of `2n` sentences. Pairs
    tokenized beforehand (`src_input_ids`, `tgt_input_ids`: `trainers.data.tokenize_pairs`, with the same tokenizer and
    `max_length`) are only padded.

    Args:
        tokenizer: any tokenizer; texts are truncated to `max_length` tokens (EMS paper: 120).
        max_length: truncation length, e.g. the model's `max_position_embeddings`.
        languages: when given, the batch also holds `target_language_ids`: for each row, the index in `languages` of
            its translation's language (the `<2xx>` row of EMS eqs. 2-3).
        translation_tokens: when true, the batch also holds `translation_ids` / `translation_mask`: each row's
            translation's tokens, true in the mask for real, non-special tokens (EMS eq. 7).
        pad_to_multiple_of: pad each batch to a multiple of this many tokens (e.g. 8 for tensor cores); None: to the
            longest row.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    languages: list[str] | None = None
    translation_tokens: bool = False
    pad_to_multiple_of: int | None = None

    def __post_init__(self):
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)))
        self._language_index = {code: index for index, code in enumerate(self.languages or [])}

    def _language_ids(self, codes: list[str]) -> torch.Tensor:
        unknown = sorted(set(codes) - set(self._language_index))
        if unknown:
            raise ValueError(f"Unknown language codes {unknown}; this model knows {len(self._language_index)} "
                             f"languages: {', '.join(self._language_index)}.")
        return torch.tensor([self._language_index[code] for code in codes])

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if "src_input_ids" in features[0]:  # tokenized once, when the data was prepared: only padded here
            rows = PairLayout.rows([f["src_input_ids"] for f in features], [f["tgt_input_ids"] for f in features])
            encoded = self.tokenizer.pad({"input_ids": rows}, padding=True, pad_to_multiple_of=self.pad_to_multiple_of,
                                         return_tensors="pt")
        else:
            texts = PairLayout.rows([f["src"] for f in features], [f["tgt"] for f in features])
            for text in texts:
                if not isinstance(text, str) or not text.strip():
                    raise ValueError(f"Parallel pair with an empty or missing text: {text!r}.")
            encoded = self.tokenizer(
                texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt",
                return_token_type_ids=False, pad_to_multiple_of=self.pad_to_multiple_of,
            )
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if self.languages is not None:
            # each row's translation's language: targets' languages for the sources, sources' for the targets
            languages = PairLayout.rows([f["tgt_lang"] for f in features], [f["src_lang"] for f in features])
            batch["target_language_ids"] = self._language_ids(languages)
        if self.translation_tokens:
            counted = batch["attention_mask"].bool() & ~torch.isin(batch["input_ids"], self._special_ids)
            batch["translation_ids"] = PairLayout.translations(batch["input_ids"])
            batch["translation_mask"] = PairLayout.translations(counted)
        return batch


def text_hashes(texts: list[str]) -> torch.Tensor:
    """`(len(texts),)` int64: a 63-bit hash of each text (BLAKE2b), equal for equal texts in every process, by which
    the ranking losses find the in-batch false negatives of a multi-parallel corpus (`ranking_loss(query_ids=...)`)."""
    return torch.tensor([int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") >> 1
                         for text in texts], dtype=torch.long)


@dataclass
class SidesCollator:
    """Tokenize examples whose texts sit in several columns (the sides of a ranking or NLI task) into one batch:
    each side's `n` rows one after the other (the `PairLayout` of two sides, generalised), so the encoder runs once
    per step. `num_examples` is `n`.

    Args:
        sides: the text columns, in row order, e.g. `("previous", "current", "next")`.
        negatives_column: a column holding K texts per example (hard negatives), tokenized after the sides, example by
            example (`n * K` rows); every example must have the same K.
        label_column: an integer column copied to `labels`.

    The batch also holds `text_ids`, one hash per row (`text_hashes`), for masking false negatives.
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int
    sides: tuple[str, ...]
    negatives_column: str | None = None
    label_column: str | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        texts = [f[side] for side in self.sides for f in features]
        if self.negatives_column is not None:
            counts = sorted({len(f[self.negatives_column]) for f in features})
            if len(counts) != 1:
                raise ValueError(f"Examples with {counts} texts in {self.negatives_column!r}: every example needs the "
                                 "same number of hard negatives.")
            texts += [text for f in features for text in f[self.negatives_column]]
        for index, text in enumerate(texts):
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Row {index} of a {'/'.join(self.sides)} batch is {text!r}: every side needs a "
                                 "non-empty text.")
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt", return_token_type_ids=False)
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
                 "num_examples": len(features), "text_ids": text_hashes(texts)}
        if self.label_column is not None:
            batch["labels"] = torch.tensor([f[self.label_column] for f in features], dtype=torch.long)
        return batch


@dataclass
class TaskCollator:
    """Collate a batch of one task (every feature carries its `task`) with that task's collator; the batch says
    which task it is under `task`, for a trainer that cycles tasks."""

    collators: dict[str, object]

    def __call__(self, features: list[dict]) -> dict:
        tasks = sorted({f["task"] for f in features})
        if len(tasks) != 1 or tasks[0] not in self.collators:
            raise ValueError(f"A batch mixes or names unknown tasks {tasks}; each batch holds one of "
                             f"{sorted(self.collators)}.")
        return {**self.collators[tasks[0]](features), "task": tasks[0]}
