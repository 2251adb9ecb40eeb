"""Loss-term logging for every Trainer subclass of the package: each term of a composite objective is logged beside
`loss` (TensorBoard, W&B, `trainer_state.json`, ...), averaged over the logging interval and over processes; and the
figures of the batches (`batch_figures`), each logged once."""

import torch


class LossTermLoggingMixin:
    """Mix into a `transformers.Trainer` subclass (before `Trainer`) and call `self.record_loss_terms({...})` from
    `compute_loss` with the detached or live scalar terms; each is logged under its name at every `logging_steps`,
    averaged over the steps that recorded it (a multi-task trainer records one task's term per step). Each of
    `batch_figures()` is logged once, at the first training log that has it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_sums: dict[str, torch.Tensor] = {}
        self._loss_counts: dict[str, int] = {}
        self._figures_logged: set[str] = set()

    def batch_figures(self) -> dict[str, int]:
        """What the batches of the training so far hold beyond the configured per-process size (e.g. the global batch
        and the in-batch candidates of a contrastive objective, which grow with the number of processes); stated
        once in the logs and on the card (the run's `training` results). None by default."""
        return {}

    def record_loss_terms(self, terms: dict[str, torch.Tensor]) -> None:
        if not self.model.training:
            return  # evaluation losses are not training terms
        for name, value in terms.items():
            self._loss_sums[name] = self._loss_sums.get(name, 0.0) + value.detach()
            self._loss_counts[name] = self._loss_counts.get(name, 0) + 1

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if "loss" in logs and self._loss_sums:
            for name, total in self._loss_sums.items():
                mean = self.accelerator.gather_for_metrics(total.reshape(1) / self._loss_counts[name]).mean()
                logs[name] = round(mean.item(), 4)
            self._loss_sums, self._loss_counts = {}, {}
        if "loss" in logs:
            figures = {name: value for name, value in self.batch_figures().items() if name not in self._figures_logged}
            logs.update(figures)
            self._figures_logged.update(figures)
        super().log(logs, *args, **kwargs)
