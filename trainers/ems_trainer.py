"""`EMSTrainer`: the joint XTR + contrastive objective of the EMS paper (eq. 12) on top of `transformers.Trainer`."""

from dataclasses import dataclass, field

import torch
from transformers import Trainer, TrainingArguments

from .losses import contrastive_loss, xtr_loss


@dataclass
class EMSTrainingArguments(TrainingArguments):
    """`TrainingArguments` with the EMS loss weights and the defaults that parallel-pair training needs."""

    xtr_weight: float = field(default=1.0, metadata={"help": "Weight of the XTR loss (eq. 12 uses 1)."})
    contrastive_weight: float = field(default=1.0, metadata={"help": "Weight of the contrastive loss (eq. 12 uses 1)."})
    remove_unused_columns: bool = field(
        default=False, metadata={"help": "Keep the text columns: the pair collator tokenizes them."}
    )
    dataloader_drop_last: bool = field(
        default=True, metadata={"help": "Equal batches on every process, as gathering in-batch negatives needs."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.xtr_weight < 0 or self.contrastive_weight < 0 or self.xtr_weight + self.contrastive_weight == 0:
            raise ValueError(
                f"xtr_weight={self.xtr_weight} and contrastive_weight={self.contrastive_weight}: both must be >= 0 "
                "and at least one > 0."
            )


class EMSTrainer(Trainer):
    """Trains an `EMSModel` on batches from `ParallelPairCollator` and logs `xtr_loss` and `contrastive_loss`."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_count = 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            target_language_ids=inputs["target_language_ids"],
        )
        n = inputs["input_ids"].shape[0] // 2
        kl = xtr_loss(outputs.xtr_logits, inputs["xtr_target_ids"], inputs["xtr_target_mask"])
        xtr = (kl[:n] + kl[n:]).mean()  # eq. 6, both directions, per pair
        embeddings = outputs.contrastive_embeddings
        temperature = self.accelerator.unwrap_model(model).config.temperature
        contrastive = contrastive_loss(embeddings[:n], embeddings[n:], temperature).mean()  # eq. 8, per pair
        loss = self.args.xtr_weight * xtr + self.args.contrastive_weight * contrastive  # eq. 12
        if model.training:
            self._record({"xtr_loss": xtr, "contrastive_loss": contrastive})
        return (loss, outputs) if return_outputs else loss

    def _record(self, terms: dict[str, torch.Tensor]):
        for name, value in terms.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value.detach()
        self._loss_count += 1

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._loss_count:
            for name, total in self._loss_sums.items():
                mean = self.accelerator.gather_for_metrics(total.reshape(1) / self._loss_count).mean()
                logs[name] = round(mean.item(), 4)
            self._loss_sums, self._loss_count = {}, 0
        super().log(logs, *args, **kwargs)
