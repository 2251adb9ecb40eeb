"""The multi-source sweep: one fine-tuning per (setting, seed), each a plain `Trainer` run with early stopping on
the validation metric (sec. 4.1.2), tested on the test split."""

import dataclasses
import json
import logging
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import datasets
import numpy as np
from transformers import (
    AutoModelForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import TrainOutput

from ...loading import quiet_loading
from ...metrics import load_metric
from ..base import last_complete_checkpoint, training_arguments

logger = logging.getLogger(__name__)

# The paper's three inputs (table 2) and what each is made of.
SETTINGS = {"A": ("text",), "B": ("translation",), "A+B": ("text", "translation")}
RUN_RESULT = "run_result.json"
BEST_FOLDER = "best"


def covering_length(lengths: np.ndarray, coverage: float, limit: int | None) -> int:
    """The fewest tokens that keep `coverage` of the inputs whole (`max_length: auto`), at most `limit`."""
    length = int(np.quantile(lengths, coverage, method="inverted_cdf"))
    return min(length, limit) if limit else length


def encode_setting(tokenizer, rows: datasets.Dataset, setting: str, max_length: int | None = None
                   ) -> datasets.Dataset:
    """Token ids of one setting's inputs: A `text`, B `translation`, A+B the pair (`text`, `translation`) through
    the tokenizer's pair encoding, both segments truncated in turn from the longest (`longest_first`) to
    `max_length` tokens (None: whole, special tokens included)."""
    columns = SETTINGS[setting]
    truncation = {"truncation": "longest_first", "max_length": max_length} if max_length is not None else {}

    def tokenize(batch):
        encoded = tokenizer(*(batch[column] for column in columns), verbose=False, **truncation)
        return {**encoded, "labels": batch["label"]}

    return rows.map(tokenize, batched=True, remove_columns=rows.column_names, desc=f"tokenizing {setting}")


def truncate_setting(tokenizer, rows: datasets.Dataset, whole: datasets.Dataset, lengths: np.ndarray, setting: str,
                     max_length: int) -> datasets.Dataset:
    """`whole` (`rows` through `encode_setting` without a limit; `lengths` its inputs' token counts) at
    `max_length` tokens: an input that fits is kept as tokenized (truncation leaves it as it is), and only the longer
    ones go through the tokenizer again, truncated, in their places."""
    long, fits = np.flatnonzero(lengths > max_length), np.flatnonzero(lengths <= max_length)
    if not len(long):
        return whole
    cut = encode_setting(tokenizer, rows.select(long), setting, max_length)
    order = np.argsort(np.concatenate([fits, long]), kind="stable")
    return datasets.concatenate_datasets([whole.select(fits), cut]).select(order)


class EpochPatience(TrainerCallback, ExportableState):
    """Early stopping in the paper's sense (sec. 4.1.2, "3 epochs of patience"): training stops once `patience`
    epochs have passed since the validation metric last improved, however often it is evaluated
    (transformers' `EarlyStoppingCallback` counts evaluations instead). Its state travels in checkpoints, so a
    resumed run stops where an uninterrupted one would."""

    def __init__(self, patience: int, best_epoch: float = 0.0):
        self.patience, self.best_epoch = patience, best_epoch

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        name = args.metric_for_best_model
        value = metrics[name if name.startswith("eval_") else f"eval_{name}"]
        better = np.greater if args.greater_is_better else np.less
        if state.best_metric is None or better(value, state.best_metric):  # best_metric: before this evaluation
            self.best_epoch = state.epoch
        elif state.epoch - self.best_epoch >= self.patience - 1e-6:
            control.should_training_stop = True

    def state(self) -> dict:
        return {"args": {"patience": self.patience}, "attributes": {"best_epoch": self.best_epoch}}


class MultiSourceSweep:
    """Every (setting, seed) fine-tuning of a `MultiSourceRecipe`, one `Trainer` each in
    `OUTPUT/runs/<setting>-seed<k>/`, run in turn (`run`).

    Resume is the sweep's own: a finished run leaves its `run_result.json` (and drops its checkpoints), so a run
    that has one is read back, and the run that was interrupted resumes from its last complete checkpoint; with
    `resume=False` the sweep starts over. Of the last setting (A+B by default), the classifier with the best
    validation score is kept in `OUTPUT/runs/best/`.
    """

    def __init__(self, recipe, args, tokenizer, train, limit: int | None = None):
        """`recipe`: the MultiSourceRecipe whose runs these are; `limit`: the model's most tokens per input."""
        self.recipe, self.args, self.tokenizer = recipe, args, tokenizer
        settings, splits = recipe.settings, {"train": train, **recipe.evaluation}
        self.inputs, self.lengths = {}, {}
        for setting in settings.settings:
            whole = {name: encode_setting(tokenizer, rows, setting) for name, rows in splits.items()}
            lengths = {name: np.asarray([len(ids) for ids in encoded["input_ids"]]) for name, encoded in whole.items()}
            length = (covering_length(lengths["train"], settings.length_coverage, limit)
                      if settings.max_length == "auto" else settings.max_length)
            self.lengths[setting] = {"max_length": length, "median_tokens": float(np.median(lengths["train"])),
                                     "cut": {name: round(float((values > length).mean()), 4)
                                             for name, values in lengths.items()}}
            logger.warning("Setting %s: %d tokens per input (median %d); inputs cut: %s", setting, length,
                           np.median(lengths["train"]), ", ".join(f"{name} {share:.1%}" for name, share in
                                                                 self.lengths[setting]["cut"].items()))
            self.inputs[setting] = {name: truncate_setting(tokenizer, rows, whole[name], lengths[name], setting, length)
                                    for name, rows in splits.items()}
        self.results: list[dict] = []

    @property
    def runs(self) -> list[tuple[str, int]]:
        return [(setting, seed) for setting in self.recipe.settings.settings for seed in self.recipe.settings.seeds]

    def run_dir(self, setting: str, seed: int) -> Path:
        return self.recipe.output_dir / "runs" / f"{setting.replace('+', '')}-seed{seed}"

    @property
    def best_folder(self) -> Path:
        return self.recipe.output_dir / "runs" / BEST_FOLDER

    def run(self, resume: bool = True) -> tuple[PreTrainedModel, TrainOutput]:
        """Every run of the sweep; returns the kept classifier and the sweep's steps, mean loss and runtime."""
        if not resume:
            shutil.rmtree(self.recipe.output_dir / "runs", ignore_errors=True)
        started, steps, losses = time.perf_counter(), 0, []
        for setting, seed in self.runs:
            result_file = self.run_dir(setting, seed) / RUN_RESULT
            if result_file.is_file():
                result = json.loads(result_file.read_text())
                logger.warning("Run %s seed %d finished before: %s %.4f", setting, seed, self.recipe.settings.metric,
                               result["test"])
            else:
                result = self.train_one(setting, seed)
            self.results.append(result)
            steps += result["global_step"]
            losses.append(result["train_loss"])
        model = AutoModelForSequenceClassification.from_pretrained(self.best_folder, trust_remote_code=False)
        return model, TrainOutput(steps, float(np.mean(losses)), {"train_runtime": time.perf_counter() - started})

    def train_one(self, setting: str, seed: int) -> dict:
        recipe, run_dir = self.recipe, self.run_dir(setting, seed)
        run_config = dataclasses.replace(recipe.run_config, training={**recipe.run_config.training, "seed": seed})
        args, _ = training_arguments(recipe.arguments_class, run_config, run_dir)
        set_seed(seed)  # the classifier's initial weights
        with quiet_loading() if self.results else nullcontext():  # the first run shows the load report
            model = recipe.load_classifier()
        metric = load_metric(recipe.settings.metric)
        extra = {"num_labels": len(recipe.labels)} if recipe.settings.metric == "qwk" else {}

        def compute_metrics(prediction):
            predictions = np.argmax(prediction.predictions, axis=-1).tolist()
            return metric.compute(predictions=predictions, references=prediction.label_ids.tolist(), **extra)

        inputs = self.inputs[setting]
        trainer = Trainer(model=model, args=args, train_dataset=inputs["train"], eval_dataset=inputs["validation"],
                          data_collator=DataCollatorWithPadding(self.tokenizer), processing_class=self.tokenizer,
                          compute_metrics=compute_metrics,
                          callbacks=[EpochPatience(patience)] if (patience := recipe.settings.patience) else [])
        checkpoint = last_complete_checkpoint(run_dir)
        if checkpoint:
            logger.warning("Resuming run %s seed %d from %s", setting, seed, checkpoint)
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        name = recipe.settings.metric
        test = trainer.predict(inputs["test"], metric_key_prefix="test").metrics[f"test_{name}"]
        result = {"setting": setting, "seed": seed, "validation": trainer.state.best_metric, "test": test,
                  "epochs": round(trainer.state.epoch, 2), "global_step": output.global_step,
                  "train_loss": round(output.training_loss, 4),
                  "train_runtime_s": round(output.metrics["train_runtime"], 1)}
        logger.warning("Run %s seed %d: validation %s %.4f, test %.4f", setting, seed, name, result["validation"], test)
        if setting == recipe.settings.settings[-1]:
            kept = [r for r in self.results if r["setting"] == setting]
            if all(result["validation"] > r["validation"] for r in kept):
                shutil.rmtree(self.best_folder, ignore_errors=True)
                trainer.save_model(str(self.best_folder))  # the best checkpoint, reloaded by load_best_model_at_end
        for path in run_dir.glob("checkpoint-*"):  # the run is done: its checkpoints are no longer needed
            shutil.rmtree(path)
        (run_dir / RUN_RESULT).write_text(json.dumps(result, indent=2))
        return result
