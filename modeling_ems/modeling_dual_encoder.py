"""Multi-task dual encoder (Chidambaram, Yang, Cer et al., "Learning Cross-Lingual Sentence Representations via a
Multi-task Dual-Encoder Model", secs. 2.1-2.2).

* `DualEncoderMultiTask`: the shared encoder `g` (embeddings, pre-LayerNorm transformer layers, final norm); its
  mean-pooled output is the sentence embedding. This is what `AutoModel` loads and what inference uses.
* `DualEncoderMultiTaskForSequenceClassification`: `g` plus a classifier (the package's shared head).
* `DualEncoderMultiTaskForPreTraining`: `g` plus the task heads of sec. 2.2, trained by cycling tasks: translation
  ranking (no head), conversational response (two tanh layers on the response side), quick-thought (separate heads
  for the previous, current and next sentence) and NLI (`(u, v, |u-v|, u*v)` -> one hidden layer -> 3 logits).

Input (sec. 2.1, `config.input_type`). Words and their character 3- and 4-grams are the paper's input; here the
"words" are the entries of the package's SentencePiece vocabulary, and the n-grams of every entry are hashed once
into a `(vocab_size, max_ngrams_per_token)` table of bucket ids (`set_ngram_vocabulary`), kept as a buffer in the
weights. The embedding module looks the n-grams up from the token ids, so the tokenizer stays the plain
SentencePiece tokenizer that `AutoTokenizer` loads, the model loads with `AutoModel` (the table comes with the
weights), and nothing custom runs on the tokenizer side. Hashing is CRC-32 of the UTF-8 bytes, the same in every
process and Python run (unlike the salted built-in `hash()`).
"""

import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPooling

from .configuration_dual_encoder import NUM_NLI_LABELS, DualEncoderMultiTaskConfig
from .layers import EncoderEmbeddings, SentenceClassificationMixin, SentenceEncoderMixin, SentenceEncoderPreTrainedModel

WORD_START = "\u2581"  # SentencePiece's word-boundary mark


def char_ngrams(piece: str, orders: Iterable[int]) -> list[str]:
    """Character n-grams of a vocabulary entry, fastText style: a piece that starts a word (SentencePiece's `▁`)
    gets the boundary mark `<`, every piece ends with `>`; a piece shorter than an order gives no n-gram of it."""
    marked = ("<" + piece[1:] if piece.startswith(WORD_START) else piece) + ">"
    return [marked[i : i + n] for n in orders for i in range(len(marked) - n + 1)]


def ngram_bucket(ngram: str, buckets: int) -> int:
    """Bucket of an n-gram: CRC-32 of its UTF-8 bytes modulo `buckets`, deterministic across processes and runs."""
    return zlib.crc32(ngram.encode("utf-8")) % buckets


def ngram_table(pieces: list[str | None], orders: Iterable[int], buckets: int, width: int) -> torch.Tensor:
    """`(len(pieces), width)` bucket ids of each piece's first `width` n-grams, padded with `buckets` (the padding
    row of the n-gram embedding); a `None` piece (a special token) has no n-grams."""
    table = torch.full((len(pieces), width), buckets, dtype=torch.long)
    orders = list(orders)
    for row, piece in enumerate(pieces):
        if piece:
            ids = [ngram_bucket(ngram, buckets) for ngram in char_ngrams(piece, orders)[:width]]
            table[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    return table


class FactorizedEmbedding(nn.Embedding):
    """Token embeddings of `config.embedding_size` (sec. 3.2: 320), taken to the encoder's `hidden_size` (512) by a
    linear layer when the two differ. An `nn.Embedding` (its weight is the word embedding), so it takes the place of
    `EncoderEmbeddings.word_embeddings` and everything that resizes or ties input embeddings still works."""

    def __init__(self, config: DualEncoderMultiTaskConfig):
        width = config.embedding_size or config.hidden_size
        super().__init__(config.vocab_size, width, padding_idx=config.pad_token_id)
        self.embedding_projection = nn.Linear(width, config.hidden_size) if width != config.hidden_size else None

    def project(self, embeddings: torch.Tensor) -> torch.Tensor:
        return embeddings if self.embedding_projection is None else self.embedding_projection(embeddings)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.project(super().forward(input_ids))


class WordAndCharNgramEmbedding(FactorizedEmbedding):
    """A token embedding averaged with its character n-grams (sec. 2.1): `(E_w[t] + tanh(W sum_g E_ng[g] + b)) / 2`
    over the hashed n-grams `g` of token `t`, word and n-gram embeddings both `embedding_size` wide (sec. 3.2)."""

    def __init__(self, config: DualEncoderMultiTaskConfig):
        super().__init__(config)
        width = self.embedding_dim
        self.ngram_embeddings = nn.EmbeddingBag(config.ngram_buckets + 1, width, mode="sum",
                                                padding_idx=config.ngram_buckets)
        self.ngram_dense = nn.Linear(width, width)
        # filled by `DualEncoderMultiTask.set_ngram_vocabulary`; saved with the weights
        self.register_buffer("ngram_table", torch.full((config.vocab_size, config.max_ngrams_per_token),
                                                       config.ngram_buckets, dtype=torch.long))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        words = nn.Embedding.forward(self, input_ids)
        ngram_ids = self.ngram_table[input_ids].reshape(-1, self.ngram_table.shape[1])
        ngrams = self.ngram_embeddings(ngram_ids).view_as(words)  # sum of the token's n-gram embeddings
        return self.project((words + torch.tanh(self.ngram_dense(ngrams))) / 2)  # sec. 2.1: tanh, averaged


class DualEncoderMultiTaskTowerHead(nn.Module):
    """Two fully connected tanh layers on top of `g` (sec. 2.2: sizes 320 and 512), for one side of a task."""

    def __init__(self, config: DualEncoderMultiTaskConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.head_intermediate_size)
        self.projection = nn.Linear(config.head_intermediate_size, config.hidden_size)
        self.activation = ACT2FN[config.head_activation]

    def forward(self, sentence_embedding: torch.Tensor) -> torch.Tensor:
        return self.activation(self.projection(self.activation(self.dense(sentence_embedding))))


class DualEncoderMultiTaskNLIHead(nn.Module):
    """InferSent-style classifier (sec. 2.2): `(u, v, |u - v|, u * v)` -> one hidden layer -> 3-way logits."""

    def __init__(self, config: DualEncoderMultiTaskConfig):
        super().__init__()
        self.dense = nn.Linear(4 * config.hidden_size, config.nli_hidden_size)
        self.activation = ACT2FN[config.head_activation]
        self.classifier = nn.Linear(config.nli_hidden_size, NUM_NLI_LABELS)

    def forward(self, premise: torch.Tensor, hypothesis: torch.Tensor) -> torch.Tensor:
        features = torch.cat([premise, hypothesis, (premise - hypothesis).abs(), premise * hypothesis], dim=-1)
        return self.classifier(self.activation(self.dense(features)))  # logits; the softmax is in the loss


@dataclass
class DualEncoderMultiTaskOutput(BaseModelOutputWithPooling):
    """The shared encoder's outputs for every row of a task batch, plus what the task's heads made of them.

    Args:
        last_hidden_state: token states of every row, `(rows, seq_len, hidden_size)`.
        pooler_output: `g` of every row, `(rows, hidden_size)`.
        task_embeddings: one `(n, hidden_size)` tensor per side of the task, in the order of `TASK_SIDES`; for
            translation a third tensor holds the `(n * K, hidden_size)` hard negatives, example by example.
        logits: the NLI head's `(n, 3)` logits (NLI batches only).
    """

    task_embeddings: tuple[torch.FloatTensor, ...] | None = None
    logits: torch.FloatTensor | None = None


# The sides of each task's batch, in row order: `n` rows each (translation then `n * K` hard negatives).
TASK_SIDES = {
    "translation": ("source", "target"),
    "response": ("input", "response"),
    "quick_thought": ("previous", "current", "next"),
    "nli": ("premise", "hypothesis"),
}


class DualEncoderMultiTaskPreTrainedModel(SentenceEncoderPreTrainedModel):
    config: DualEncoderMultiTaskConfig
    config_class = DualEncoderMultiTaskConfig
    base_model_prefix = "encoder"

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, nn.EmbeddingBag):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()


class DualEncoderMultiTask(SentenceEncoderMixin, DualEncoderMultiTaskPreTrainedModel):
    """The shared encoder `g`: `forward(input_ids, attention_mask)` returns token states and the mean-pooled
    sentence embedding (`pooler_output`)."""

    # A folder saved from the head class also holds the task heads; inference does not need them.
    _keys_to_ignore_on_load_unexpected = [r"^(response_head|quick_thought_\w+_head|nli_head)\."]

    def build_embeddings(self, config: DualEncoderMultiTaskConfig) -> EncoderEmbeddings:
        embeddings = EncoderEmbeddings(config)
        if config.input_type == "char_ngram":
            embeddings.word_embeddings = WordAndCharNgramEmbedding(config)
        elif (config.embedding_size or config.hidden_size) != config.hidden_size:
            embeddings.word_embeddings = FactorizedEmbedding(config)
        return embeddings

    def set_ngram_vocabulary(self, pieces: list[str | None]) -> None:
        """Hash the character n-grams of each vocabulary entry (`None` for special tokens) into the table the
        n-gram input looks up; `pieces[i]` is the token of id `i`, e.g. from `tokenizer.convert_ids_to_tokens`."""
        if self.config.input_type != "char_ngram":
            raise ValueError(f"input_type={self.config.input_type!r} has no character n-grams; build the model with "
                             "input_type='char_ngram'.")
        if len(pieces) != self.config.vocab_size:
            raise ValueError(f"{len(pieces)} vocabulary entries for a model of vocab_size {self.config.vocab_size}; "
                             "pass one entry per token id.")
        embedding = self.get_input_embeddings()
        table = ngram_table(pieces, self.config.ngram_orders, self.config.ngram_buckets, embedding.ngram_table.shape[1])
        embedding.ngram_table.copy_(table)


class DualEncoderMultiTaskForPreTraining(DualEncoderMultiTaskPreTrainedModel):
    """`g` with the heads of `config.tasks`, trained one task per optimisation step.

    `forward(input_ids, attention_mask, task)` encodes every row of a task batch once with `g`: the task's sides
    (`TASK_SIDES[task]`) of `n` rows each, one after the other, and for translation `n * K` hard negatives after
    them. Returns the side embeddings after the task's heads and, for NLI, the logits.
    """

    def __init__(self, config: DualEncoderMultiTaskConfig):
        super().__init__(config)
        self.encoder = DualEncoderMultiTask(config)
        if "response" in config.tasks:
            self.response_head = DualEncoderMultiTaskTowerHead(config)  # g^R; g^I = g (sec. 2.2)
        if "quick_thought" in config.tasks:
            self.quick_thought_previous_head = DualEncoderMultiTaskTowerHead(config)  # g^P
            self.quick_thought_current_head = DualEncoderMultiTaskTowerHead(config)  # g^I
            self.quick_thought_next_head = DualEncoderMultiTaskTowerHead(config)  # g^R
        if "nli" in config.tasks:
            self.nli_head = DualEncoderMultiTaskNLIHead(config)
        self.post_init()

    def side_heads(self, task: str) -> list[nn.Module | None]:
        """The head each side of a `task` batch goes through (None: `g` itself), in the order of its sides
        (`TASK_SIDES[task]`), then for translation the hard negatives' (sec. 2.2)."""
        if task == "response":
            return [None, self.response_head]  # g^I = g, g^R
        if task == "quick_thought":  # g^P, g^I, g^R
            return [self.quick_thought_previous_head, self.quick_thought_current_head, self.quick_thought_next_head]
        return [None] * (len(TASK_SIDES[task]) + (task == "translation"))  # translation: g on both sides (and K)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        task: str = "translation",
        num_examples: int | None = None,
        row_sides: torch.Tensor | None = None,
        **kwargs,
    ) -> DualEncoderMultiTaskOutput:
        """With `row_sides` (the side of each row, the hard negatives one past the last), the rows may be any part of
        a task batch, e.g. a mini-batch of it: each row goes through its side's head, and `task_embeddings` is one
        `(rows, hidden_size)` tensor in the rows' order. NLI's head reads a premise with its hypothesis: NLI
        batches are encoded whole."""
        self.config.check_tasks([task])
        sides = len(TASK_SIDES[task])
        if row_sides is not None:
            if task == "nli":
                raise ValueError("row_sides: the NLI head reads each premise with its hypothesis; pass the whole NLI "
                                 "batch with num_examples instead.")
            encoded = self.encoder(input_ids, attention_mask)
            g = encoded.pooler_output
            embeddings = g.clone()
            for side, head in enumerate(self.side_heads(task)):
                if head is not None:  # row-wise heads: only the rows of this side go through it
                    rows = row_sides == side
                    embeddings[rows] = head(g[rows])
            return DualEncoderMultiTaskOutput(last_hidden_state=encoded.last_hidden_state, pooler_output=g,
                                              task_embeddings=(embeddings,))
        n = input_ids.shape[0] // sides if num_examples is None else int(num_examples)
        if n < 1 or input_ids.shape[0] < sides * n or (task != "translation" and input_ids.shape[0] != sides * n):
            raise ValueError(f"A {task} batch holds {sides} sides of num_examples rows each"
                             f"{' (then the hard negatives)' if task == 'translation' else ''}; got "
                             f"{input_ids.shape[0]} rows for num_examples={num_examples}.")
        encoded = self.encoder(input_ids, attention_mask)
        g = encoded.pooler_output
        parts = [g[i * n : (i + 1) * n] for i in range(sides)]
        if task == "translation":
            parts.append(g[sides * n :])  # the hard negatives
        parts = [part if head is None else head(part) for head, part in zip(self.side_heads(task), parts)]
        logits = self.nli_head(*parts) if task == "nli" else None
        return DualEncoderMultiTaskOutput(last_hidden_state=encoded.last_hidden_state, pooler_output=g,
                                          task_embeddings=tuple(parts), logits=logits)


class DualEncoderMultiTaskForSequenceClassification(SentenceClassificationMixin, DualEncoderMultiTaskPreTrainedModel):
    """`g` (as `.encoder`) with a classifier on its sentence embedding, for fine-tuning on labelled texts
    (`AutoModelForSequenceClassification`); a folder of either other class loads into it, task heads dropped."""

    encoder_class = DualEncoderMultiTask
    _keys_to_ignore_on_load_unexpected = DualEncoderMultiTask._keys_to_ignore_on_load_unexpected


__all__ = [
    "DualEncoderMultiTask",
    "DualEncoderMultiTaskForPreTraining",
    "DualEncoderMultiTaskForSequenceClassification",
    "DualEncoderMultiTaskOutput",
    "DualEncoderMultiTaskPreTrainedModel",
    "TASK_SIDES",
    "WordAndCharNgramEmbedding",
    "char_ngrams",
    "ngram_bucket",
    "ngram_table",
]
