"""`EMSTrainer`: the joint XTR + contrastive objective of the EMS paper (eq. 12) on top of `transformers.Trainer`."""

from dataclasses import dataclass, field

from transformers import Trainer

from ...arguments import PairTrainingArguments
from ...evaluation.training import SuiteEvaluationMixin
from ...loss_logging import LossTermLoggingMixin
from ...losses import ems_objective


@dataclass
class EMSTrainingArguments(PairTrainingArguments):
    """`PairTrainingArguments` with the EMS loss weights."""

    xtr_weight: float = field(default=1.0, metadata={"help": "Weight of the XTR loss (eq. 12 uses 1)."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Weight of the contrastive loss (eq. 12 uses 1)."})

    def __post_init__(self):
        super().__post_init__()
        if self.xtr_weight < 0 or self.contrastive_weight < 0 or self.xtr_weight + self.contrastive_weight == 0:
            raise ValueError(
                f"xtr_weight={self.xtr_weight} and contrastive_weight={self.contrastive_weight}: both must be >= 0 "
                "and at least one > 0."
            )


class EMSTrainer(LossTermLoggingMixin, SuiteEvaluationMixin, Trainer):
    """Trains an `EMSForPreTraining` on `ParallelPairCollator` batches (with target languages and translation
    tokens), logs `xtr_loss` and `contrastive_loss`, and evaluates with an evaluation suite
    (`set_evaluation_suite`) at the training arguments' `eval_strategy`."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            target_language_ids=inputs["target_language_ids"],
            return_xtr_logits=self.args.xtr_weight != 0,  # a term weighted 0 is not computed
        )
        loss, terms = ems_objective(
            outputs.xtr_logits, outputs.contrastive_embeddings, inputs["translation_ids"], inputs["translation_mask"],
            temperature=self.accelerator.unwrap_model(model).config.temperature,
            xtr_weight=self.args.xtr_weight, contrastive_weight=self.args.contrastive_weight,
        )
        self.record_loss_terms(terms)
        return (loss, outputs) if return_outputs else loss
