"""`EMSTrainer`: the joint XTR + contrastive objective of the EMS paper (eq. 12) on top of `transformers.Trainer`."""

from dataclasses import dataclass, field

import torch
from transformers import Trainer
from transformers.utils import is_torch_tf32_available

from ...arguments import GradCacheTrainingArguments
from ...evaluation.training import SuiteEvaluationMixin
from ...full_weights import FullWeightsSaveMixin
from ...grad_cache import cached_objective
from ...layout import PairLayout
from ...length_grouping import LengthGroupingMixin
from ...loss_logging import LossTermLoggingMixin
from ...losses import contrastive_loss, ems_objective, matryoshka_loss, xtr_loss


@dataclass
class EMSTrainingArguments(GradCacheTrainingArguments):
    """`GradCacheTrainingArguments` with the EMS loss weights and TF32."""

    xtr_weight: float = field(default=1.0, metadata={"help": "Weight of the XTR loss (eq. 12 uses 1)."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Weight of the contrastive loss (eq. 12 uses 1)."})
    tf32: bool | str | None = field(default=None, metadata={
        "help": "TF32 matmuls on CUDA (Ampere or newer): true, false, or auto: on where the GPU has them, else "
                "torch's default (a machine without CUDA refuses true)."})

    def __post_init__(self):
        if self.tf32 == "auto":
            self.tf32 = True if is_torch_tf32_available() else None
        elif self.tf32 is not None and not isinstance(self.tf32, bool):
            raise ValueError(f"tf32={self.tf32!r}: use true, false or auto.")
        super().__post_init__()
        if self.xtr_weight < 0 or self.contrastive_weight < 0 or self.xtr_weight + self.contrastive_weight == 0:
            raise ValueError(
                f"xtr_weight={self.xtr_weight} and contrastive_weight={self.contrastive_weight}: both must be >= 0 "
                "and at least one > 0."
            )


class EMSTrainer(FullWeightsSaveMixin, LengthGroupingMixin, LossTermLoggingMixin, SuiteEvaluationMixin, Trainer):
    """Trains an `EMSForPreTraining` on `ParallelPairCollator` batches (with target languages and translation
    tokens), logs `xtr_loss` and `contrastive_loss`, and evaluates with an evaluation suite
    (`set_evaluation_suite`) at the training arguments' `eval_strategy`.

    With `mini_batch_size`, a training batch runs through GradCache (`cached_objective`): both terms depend on the
    encoder only through each sentence's XTR divergence and contrastive embedding (the heads read the pooled `u`
    of eq. 1), which are what is cached.

    With `matryoshka_dims`, a third term, `matryoshka_loss`: the contrastive loss of eq. 8 (same temperature) on
    the leading d dimensions of the sentence embedding `u` (eq. 1, what inference returns) for each d, summed with
    `matryoshka_weights` (`trainers.losses.matryoshka_loss`, as sentence-transformers' `MatryoshkaLoss`). Eq. 8
    itself reads `h(S)`, a training head that the published folder drops: truncating it would not shape the
    embedding users truncate. Under GradCache `u` is cached beside the other two."""

    def batch_figures(self) -> dict[str, int]:
        pairs = self.args.per_device_train_batch_size * self.args.world_size
        # eq. 8: each sentence is ranked among the translations of every process's batch
        return {"global_batch_pairs": pairs, "in_batch_candidates": pairs,
                "mini_batch_size": self.args.mini_batch_size or self.args.per_device_train_batch_size}

    def forward_heads(self, model, inputs):
        return model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            target_language_ids=inputs["target_language_ids"],
            return_xtr_logits=self.args.xtr_weight != 0,  # a term weighted 0 is not computed
        )

    def per_row(self, outputs, inputs) -> tuple[torch.Tensor | None, ...]:
        """Each row's XTR divergence (eq. 6, one direction; None when XTR is weighted 0), contrastive embedding
        `h(S)` (eqs. 10-11) and sentence embedding `u` (eq. 1; None without `matryoshka_dims`): all that the
        objective reads of the model."""
        kl = xtr_loss(outputs.xtr_logits, inputs["translation_ids"], inputs["translation_mask"]) \
            if self.args.xtr_weight else None
        return kl, outputs.contrastive_embeddings, outputs.pooler_output if self.args.matryoshka_dims else None

    def objective(self, model, xtr_kl, contrastive_embeddings,
                  sentence_embeddings=None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        temperature = self.accelerator.unwrap_model(model).config.temperature
        loss, terms = ems_objective(
            None, contrastive_embeddings, None, None, xtr_kl=xtr_kl, temperature=temperature,
            xtr_weight=self.args.xtr_weight, contrastive_weight=self.args.contrastive_weight,
        )
        if self.args.matryoshka_dims:  # eq. 8 on the leading d dims of u, for each d, weighted and summed
            terms["matryoshka_loss"] = matryoshka_loss(
                lambda u: contrastive_loss(*PairLayout.split(u), temperature).mean(), [sentence_embeddings],
                self.args.matryoshka_dims, self.args.matryoshka_weights)
            loss = loss + terms["matryoshka_loss"]
        return loss, terms

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self.args.mini_batch_size and model.training and torch.is_grad_enabled() and not return_outputs:
            loss, terms = cached_objective(
                model, inputs, 2 * self.args.mini_batch_size,  # PairLayout: 2 rows per pair
                lambda model, rows: self.per_row(self.forward_heads(model, rows), rows),
                lambda *rows: self.objective(model, *rows), no_sync=lambda: self.accelerator.no_sync(model))
            self.record_loss_terms(terms)
            return loss
        outputs = self.forward_heads(model, inputs)
        loss, terms = self.objective(model, *self.per_row(outputs, inputs))
        self.record_loss_terms(terms)
        return (loss, outputs) if return_outputs else loss
