"""Training-argument dataclasses shared by several methods: `TrainingArguments` with the defaults of training on
parallel pairs, and of training a sentence encoder with a stated pooling. A method's own settings (loss weights, the
EMA teacher's decay, ...) live with its trainer."""

from dataclasses import dataclass, field

from transformers import TrainingArguments

from .encoding import POOLING_MODES
from .losses import check_matryoshka_dims


@dataclass
class PairTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the defaults that training on parallel pairs needs."""

    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the text columns: the pair collator tokenizes them."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Equal batches on every process, as gathering in-batch negatives needs."}
    )
    matryoshka_dims: list[int] | None = field(default=None, metadata={
        "help": "Matryoshka dimensions, largest first (e.g. [384, 256, 128, 64]): the embedding losses are applied "
                "to the leading d dimensions for each d and summed (trainers.losses.matryoshka_loss): the alignment "
                "and distillation MSE, the multi-task ranking losses, and for EMS a contrastive term (eq. 8) on the "
                "sentence embedding beside eq. 12. None: off."})
    matryoshka_weights: list[float] | None = field(default=None, metadata={
        "help": "One weight per Matryoshka dimension; None: 1 each."})

    def __post_init__(self):
        super().__post_init__()
        if self.matryoshka_dims is not None:  # the width is checked against the model when the loss first runs
            check_matryoshka_dims(self.matryoshka_dims, float("inf"),
                                  self.matryoshka_weights)
        elif self.matryoshka_weights is not None:
            raise ValueError(f"matryoshka_weights={self.matryoshka_weights!r} without matryoshka_dims: set the "
                             "dimensions they weigh, or drop the weights.")


@dataclass
class GradCacheTrainingArguments(PairTrainingArguments):
    """`PairTrainingArguments` of a trainer whose objective can run through GradCache (`cached_objective`)."""

    mini_batch_size: int | None = field(default=None, metadata={
        "help": "Examples (pairs; for the multi-task ranking tasks, examples with all their sides and hard "
                "negatives) encoded at once (GradCache, trainers/grad_cache.py): the objective still covers the whole "
                "per_device_train_batch_size (and the in-batch candidates of every process) with the activation "
                "memory of this many examples, for about one more forward pass per step. None: the whole batch at "
                "once."})

    def __post_init__(self):
        super().__post_init__()
        if self.mini_batch_size is not None and (isinstance(self.mini_batch_size, bool)
                                                 or not isinstance(self.mini_batch_size, int)
                                                 or self.mini_batch_size < 1):
            raise ValueError(f"mini_batch_size={self.mini_batch_size!r}: give a number of examples >= 1 (below "
                             f"per_device_train_batch_size={self.per_device_train_batch_size} to save memory), or "
                             "null to encode the whole batch at once.")


@dataclass
class EncoderTrainingArguments(PairTrainingArguments):
    """`PairTrainingArguments` for a trainer of a sentence encoder: how it pools its token states."""

    pooling: str | None = field(default=None, metadata={
        "help": "Sentence embedding of the encoder: None for its own (pooler_output of this package's models, else "
                "mean), 'mean' or 'cls'."})

    def __post_init__(self):
        super().__post_init__()
        if self.pooling is not None and self.pooling not in POOLING_MODES:
            raise ValueError(f"pooling={self.pooling!r}: use one of {POOLING_MODES}, or None for the model's own.")
