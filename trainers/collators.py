"""Batch builders for the trainers."""

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from modeling_ems import EMSConfig


@dataclass
class ParallelPairCollator:
    """Tokenize parallel pairs into one batch of `2 * n` sentences: rows `0..n-1` the sources, rows `n..2n-1` their
    translations, so the encoder runs once per step.

    Adds what the EMS objectives need: `target_language_ids` (the language of each sentence's translation, eqs. 2-3),
    and `xtr_target_ids` / `xtr_target_mask` (the translation's tokens, without padding and special tokens, eq. 7).
    Texts longer than the model's `max_position_embeddings` are truncated, as in the paper (120 tokens).
    """

    tokenizer: PreTrainedTokenizerBase
    config: EMSConfig

    def __post_init__(self):
        self._special_ids = torch.tensor(sorted(set(self.tokenizer.all_special_ids)))

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        n = len(features)
        texts = [f["src"] for f in features] + [f["tgt"] for f in features]
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"Parallel pair with an empty or missing text: {text!r}.")
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.config.max_position_embeddings, return_tensors="pt",
            return_token_type_ids=False,
        )
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]
        languages = [f["tgt_lang"] for f in features] + [f["src_lang"] for f in features]
        counted = attention_mask.bool() & ~torch.isin(input_ids, self._special_ids)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "target_language_ids": torch.tensor([self.config.language_id(code) for code in languages]),
            "xtr_target_ids": input_ids.roll(n, dims=0),  # row i's translation is row i +- n
            "xtr_target_mask": counted.roll(n, dims=0),
        }
