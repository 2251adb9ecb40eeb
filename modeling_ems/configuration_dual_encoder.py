"""Configuration of the multi-task dual encoder (Chidambaram, Yang, Cer et al., "Learning Cross-Lingual Sentence
Representations via a Multi-task Dual-Encoder Model"). Defaults are the paper's encoder and heads (secs. 2.1-2.2:
3 x 512, 8 heads, filter 2048, heads of 320 and 512, the dot product) except the vocabulary (the package's
SentencePiece tokenizer), `embedding_size` (None: the hidden size; the paper: 320) and `max_position_embeddings`
(120; the paper: 64); `configs/multitask_paper.yaml` sets the paper's values."""

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

# The task types of sec. 2.2, by the names a training config uses.
TASKS = ("translation", "response", "quick_thought", "nli")
INPUT_TYPES = ("subword", "char_ngram")
SIMILARITIES = ("dot", "cosine")
NUM_NLI_LABELS = 3  # entailment, neutral, contradiction
_ACTIVATIONS = ("relu", "gelu", "silu", "swish", "gelu_new", "tanh")


@strict
class DualEncoderMultiTaskConfig(PreTrainedConfig):
    r"""
    Args:
        vocab_size: SentencePiece vocabulary plus the `<2xx>` language tokens.
        hidden_size / num_hidden_layers / num_attention_heads / intermediate_size: the shared transformer encoder
            `g` (sec. 2.1: 512 / 3 / 8 / 2048); its mean-pooled output is the sentence embedding.
        max_position_embeddings: learned positions; inputs are truncated to this many tokens.
        embedding_size: width of the word (and character n-gram) embeddings (sec. 3.2: 320), taken to `hidden_size`
            by a linear layer; None: `hidden_size`, no layer between.
        tasks: the task heads to build (sec. 2.2), a subset of `"translation"` (no head: dot product of `g`
            outputs), `"response"` (response side through two tanh layers), `"quick_thought"` (separate two-layer
            tanh heads for the previous, current and next sentence), `"nli"` (features `(u, v, |u-v|, u*v)`, one
            hidden layer, 3-way logits).
        head_intermediate_size: width of the first layer of the response and quick-thought heads (paper: 320; the
            second layer has `hidden_size`, 512 in the paper, so head outputs are dot-comparable with `g`).
        head_activation: activation of those layers (tanh in the paper).
        nli_hidden_size: the NLI hidden layer (paper: 512).
        input_type: `"subword"`: SentencePiece ids embedded as they are; `"char_ngram"`: each token's embedding
            averaged with `tanh(W sum of its hashed character n-gram embeddings)` (sec. 2.1).
        ngram_orders: character n-gram lengths (paper: 3 and 4).
        ngram_buckets: hash buckets of the n-gram embedding (paper: 200k); collisions are bounded by this count.
        max_ngrams_per_token: n-grams kept per vocabulary entry (the first ones; longer pieces are rare).
        similarity: `phi` of eq. 2: `"dot"` (the paper's dot product) or `"cosine"` divided by `temperature`.
        temperature: divides cosine similarities; unused with `"dot"`.
        languages: language codes of the tokenizer's `<2xx>` tokens, for evaluation per language.
    """

    model_type = "dual_encoder_multitask"

    vocab_size: int = 8000
    hidden_size: int = 512
    num_hidden_layers: int = 3
    num_attention_heads: int = 8
    intermediate_size: int = 2048
    hidden_act: str = "relu"
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    max_position_embeddings: int = 120
    embedding_size: int | None = None
    layer_norm_eps: float = 1e-5
    initializer_range: float = 0.02
    tasks: list[str] | None = None
    head_intermediate_size: int = 320
    head_activation: str = "tanh"
    nli_hidden_size: int = 512
    input_type: str = "subword"
    ngram_orders: list[int] | None = None
    ngram_buckets: int = 200000
    max_ngrams_per_token: int = 24
    similarity: str = "dot"
    temperature: float | int = 0.05
    languages: list[str] | None = None
    pad_token_id: int | None = 0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.tasks = list(TASKS) if self.tasks is None else list(self.tasks)
        self.ngram_orders = [3, 4] if self.ngram_orders is None else list(self.ngram_orders)
        if self.languages is not None:
            self.languages = list(self.languages)
        super().__post_init__(**kwargs)

    def validate_architecture(self):
        """Part of `@strict` validation: reject settings that cannot build a working model, naming the fix."""
        super().validate_architecture()
        name = type(self).__name__
        sizes = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "max_position_embeddings", "head_intermediate_size", "nli_hidden_size", "ngram_buckets",
                 "max_ngrams_per_token")
        for field in sizes + ("embedding_size",) * (self.embedding_size is not None):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}.{field} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{name}.hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                             f"({self.num_attention_heads}).")
        for field in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise ValueError(f"{name}.{field} must be in [0, 1), got {getattr(self, field)!r}.")
        for field in ("hidden_act", "head_activation"):
            if getattr(self, field) not in _ACTIVATIONS:
                raise ValueError(f"{name}.{field}={getattr(self, field)!r} is not one of {_ACTIVATIONS}.")
        if not self.tasks:
            raise ValueError(f"{name}.tasks is empty; name at least one of {TASKS}.")
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"{name}.tasks={self.tasks!r}: each task once, from {TASKS} (unknown: {unknown}).")
        if self.input_type not in INPUT_TYPES:
            raise ValueError(f"{name}.input_type={self.input_type!r} is not one of {INPUT_TYPES}.")
        if not self.ngram_orders or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                                        for n in self.ngram_orders):
            raise ValueError(f"{name}.ngram_orders={self.ngram_orders!r} must be positive n-gram lengths, e.g. [3, 4].")
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"{name}.similarity={self.similarity!r} is not one of {SIMILARITIES}.")
        if not self.temperature > 0:
            raise ValueError(f"{name}.temperature must be > 0, got {self.temperature!r}.")
        if self.pad_token_id is not None and not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"{name}.pad_token_id={self.pad_token_id} is outside the vocabulary "
                             f"(size {self.vocab_size}).")

    def check_tasks(self, tasks) -> None:
        """Raise, naming them, if a training run asks for tasks this model has no head for."""
        missing = [task for task in tasks if task not in self.tasks]
        if missing:
            raise ValueError(f"The model has no head for the tasks {missing}: it was built with tasks={self.tasks}. "
                             "Add them to the model's `tasks` or drop them from the training tasks.")


__all__ = ["DualEncoderMultiTaskConfig", "INPUT_TYPES", "NUM_NLI_LABELS", "SIMILARITIES", "TASKS"]
