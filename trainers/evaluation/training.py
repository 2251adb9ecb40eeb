"""Evaluation suites during training, through `Trainer.evaluate`: the suite's metrics are logged like the loss
(`Trainer.log`, prefix `eval_`), so they reach `state.log_history`, `trainer_state.json` and every `report_to`
integration (TensorBoard, W&B, ...), and `metric_for_best_model` / `load_best_model_at_end` can select a checkpoint
by them. When to evaluate is the Trainer's own business: `eval_strategy` and `eval_steps` of the training arguments.
"""

import logging
import time

from accelerate.utils import broadcast_object_list
from transformers.trainer_utils import speed_metrics

from ..encoding import encode
from .suite import failed_evaluators, flat_metrics, run_suite

logger = logging.getLogger(__name__)

# Stands in for the eval dataset at `Trainer.__init__`, which refuses an `eval_strategy` without one; the suite is
# the evaluation instead, and `eval_dataset` is None again once the Trainer is built.
_SUITE_PLACEHOLDER = "evaluation suite"


class SuiteEvaluationMixin:
    """Mix into a `transformers.Trainer` subclass (before `Trainer`), then `set_evaluation_suite(evaluators)`:
    `evaluate` runs the evaluators (`load_suite`) on the model being trained, encoded with `processing_class`
    `per_device_eval_batch_size` texts at a time, and returns and logs `eval_<evaluator>_<metric>` (plus
    `eval_<task>_average_<metric>` over a task's languages, and `eval_runtime`).

    A trainer built without an `eval_dataset` may have an `eval_strategy`: the suite evaluates. Training refuses to
    start when it has neither a suite nor an eval dataset to evaluate with. With several processes the main
    process evaluates while the others wait for its metrics (broadcast), so every process returns the same dict
    and takes the same best-checkpoint decision. An evaluator that fails is logged with its reason and left out of
    the metrics; the other evaluators still count.
    """

    def __init__(self, *args, **kwargs):
        training_args = kwargs.get("args", args[1] if len(args) > 1 else None)
        evaluating = getattr(training_args, "eval_strategy", "no") != "no"
        placeholder = evaluating and len(args) < 5 and kwargs.get("eval_dataset") is None
        if placeholder:
            kwargs["eval_dataset"] = _SUITE_PLACEHOLDER
        super().__init__(*args, **kwargs)
        if placeholder:
            self.eval_dataset = None
        self.evaluation_suite: list | None = None

    def set_evaluation_suite(self, evaluators: list) -> None:
        """Evaluate with `evaluators` at each evaluation of the training arguments' `eval_strategy`."""
        if not evaluators:
            raise ValueError("The evaluation suite has no evaluators; load one with `load_suite(path)`.")
        if self.args.eval_strategy == "no":
            raise ValueError("An evaluation suite is set but eval_strategy is 'no', so it would never run: set the "
                             "training arguments' eval_strategy to 'steps' (with eval_steps: N) or 'epoch' "
                             "(in a run config: training.eval_strategy, training.eval_steps).")
        if self.eval_dataset is not None:
            raise ValueError(f"{type(self).__name__} has an eval_dataset and would evaluate with a suite too; pass one "
                             "of them.")
        if self.processing_class is None:
            raise ValueError(f"{type(self).__name__} has no processing_class to encode the suite's texts with; pass "
                             "the tokenizer as processing_class.")
        if self.is_fsdp_enabled or self.is_deepspeed_enabled:
            raise ValueError("Suite evaluation encodes with the main process's copy of the model, which FSDP and "
                             "DeepSpeed shard; evaluate the saved checkpoints with `ems-evaluate` instead.")
        self.evaluation_suite = list(evaluators)

    def train(self, *args, **kwargs):
        if self.args.eval_strategy != "no" and self.evaluation_suite is None and self.eval_dataset is None:
            raise ValueError(f"eval_strategy is {self.args.eval_strategy.value!r} but {type(self).__name__} has "
                             "nothing to evaluate with: set an evaluation suite (run config: `evaluation: {suite: "
                             "FILE}`; code: trainer.set_evaluation_suite(load_suite(FILE))) or set eval_strategy to "
                             "'no'.")
        return super().train(*args, **kwargs)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Run the suite (the main process; the others wait for its metrics), log the metrics through `self.log`
        and the callbacks' `on_evaluate`, and return them; without a suite, the Trainer's own evaluation."""
        if self.evaluation_suite is None:
            return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
        if eval_dataset is not None:
            raise ValueError(f"{type(self).__name__} evaluates with its evaluation suite; it takes no eval_dataset.")
        start = time.time()
        outcome = [self._run_suite_on_main_process() if self.is_world_process_zero() else None]
        outcome = broadcast_object_list(outcome)[0]  # the other processes wait here for the main one's metrics
        if "failure" in outcome:
            raise RuntimeError(f"Evaluating the suite on the main process failed: {outcome['failure']}")
        metrics = {f"{metric_key_prefix}_{key}": value for key, value in outcome["metrics"].items()}
        metrics.update(speed_metrics(metric_key_prefix, start))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def _run_suite_on_main_process(self) -> dict:
        """`{"metrics": flat metrics}`, or `{"failure": reason}` so that the waiting processes raise too instead of
        waiting forever."""
        model = self.accelerator.unwrap_model(self.model)
        batch_size = self.args.per_device_eval_batch_size
        pooling = getattr(self.args, "pooling", None)  # a trainer whose arguments state the encoder's pooling
        embed = lambda texts: encode(model, self.processing_class, texts, batch_size=batch_size,  # noqa: E731
                                     pooling=pooling)
        try:
            results = run_suite(self.evaluation_suite, embed)
        except Exception as error:
            return {"failure": f"{type(error).__name__}: {error}"}
        failed = failed_evaluators(results)
        if failed:
            logger.warning("Step %d: %d evaluators failed and are left out of the metrics: %s", self.state.global_step,
                           len(failed), failed)
        return {"metrics": flat_metrics(results)}
