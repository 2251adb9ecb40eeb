"""What every recipe shares, written once: the registry that turns a config's `recipe:` into a class, training
arguments and seeding, resume from the last complete checkpoint, the run's steps in order, the card and publishing.

A recipe is a `Recipe` subclass. The contract, in the order `Recipe.run` calls the steps:

| step | must / may | what it does |
|---|---|---|
| `__init__(run_config, output_dir)` | may extend | check what can be checked before any work (settings, models named) |
| `load_data()` | must | `(train, evaluation sets)`; evaluation data never shares a text with training data |
| `prepare_tokenizer(train, args)` | must | the tokenizer (trained, or the model's own) |
| `prepare_train_data(train, tokenizer, args)` | may | what the trainer reads (default: `train` as it is) |
| `fit(train, tokenizer, args, resume)` | may | `(model, TrainOutput)`; default: `train_model(build_model())` |
| `build_model(tokenizer)` | must, for the default `fit` | the model, weights drawn after `set_seed` |
| `make_trainer(model, args, train, tokenizer)` | must, for `train_model` | the `Trainer`; resumed, then saved |
| `save(model, tokenizer)` | may | files beside the saved model (main process); returns the model to evaluate |
| `evaluate(model, tokenizer, evaluation)` | must | the results written to `eval_results.json` |
| `card_data(model, results)` | must, for the default `card` | the card's `ModelCardData` fields |
| `card_context(model, results)` | must, for the default `card` | the values its template reads |
| `summary(results)` | must | the headline figures the train command prints |

Class attributes: `name` (what `recipe:` names), `sections` (the config sections the recipe adds, name -> settings
type), `arguments_class`, `example_config`, `card_template` (default `hub_cards/<name>.md`), `publish_ignore`
(intermediate files kept in the output folder but never published) and `launcher` (how the card's command starts).

A shipped recipe is the package `trainers/recipes/<name>/`, imported when a config names it; a recipe of the user's
own is named by its import path, `recipe: my_package.my_module:MyRecipe`, and needs no registration.
"""

import dataclasses
import gc
import json
import logging
import os
import shlex
import shutil
import time
import typing
from collections.abc import Sized
from importlib import import_module
from pathlib import Path
from pkgutil import iter_modules
from typing import ClassVar

import datasets
import torch
import yaml
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import TrainOutput

from hub_cards import template

from ..cards import render_model_card, without_local_paths
from ..config import RunConfig, build_run_config, check_known_settings, import_from_config, read_raw_config
from ..evaluation.suite import load_suite
from ..files import write_text_atomic
from ..hub import publish
from ..loading import resolve_bf16
from ..loss_logging import LossTermLoggingMixin

logger = logging.getLogger(__name__)

RECIPES: dict[str, type["Recipe"]] = {}


def register_recipe(cls: type["Recipe"]) -> type["Recipe"]:
    """Class decorator: make a recipe available to configs under `cls.name`."""
    if cls.name in RECIPES and RECIPES[cls.name] is not cls:
        raise ValueError(f"Two recipes are named {cls.name!r}: {RECIPES[cls.name].__qualname__} and "
                         f"{cls.__qualname__}.")
    RECIPES[cls.name] = cls
    return cls


def shipped_recipes() -> list[str]:
    """The recipes of this package: one subpackage of `trainers.recipes` each."""
    return sorted(module.name for module in iter_modules([str(Path(__file__).parent)]) if module.ispkg)


def get_recipe(name: str, source: str = "the config") -> type["Recipe"]:
    """The recipe class a config names: a shipped recipe by name (`ems`), or any `Recipe` subclass by its import
    path, `module:Class` (the module importable from the working directory or the environment)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"{source} names recipe {name!r}; name one of {', '.join(shipped_recipes())}, or your own "
                         "as module:Class.")
    if ":" in name:
        return _import_recipe(name, source)
    if name not in RECIPES and name in shipped_recipes():
        import_module(f"{__package__}.{name}")  # the package registers its recipe
    if name not in RECIPES:
        raise ValueError(f"{source} names recipe {name!r}, which does not exist; recipes: "
                         f"{', '.join(shipped_recipes())}, or your own as module:Class.")
    return RECIPES[name]


def _import_recipe(path: str, source: str) -> type["Recipe"]:
    cls = import_from_config(path, f"recipe in {source}")
    if not (isinstance(cls, type) and issubclass(cls, Recipe)):
        raise ValueError(f"{source} names recipe {path!r}, which is {cls!r}, not a Recipe subclass.")
    return cls


def load_run_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config, apply `--set` overrides and check it against the sections of the recipe it names."""
    path, raw = read_raw_config(path, overrides)
    recipe_name = raw.pop("recipe", None)
    if recipe_name is None:
        raise ValueError(f"{path} names no recipe; add e.g. `recipe: ems` (one of: {', '.join(shipped_recipes())}).")
    recipe = get_recipe(recipe_name, source=str(path))
    return build_run_config(path, raw, recipe_name, recipe.sections, recipe.example_config, overrides)


# Settings that may change between a run and its resumption (said in the log): how long it trains, where it
# reports and publishes, how often it logs.
RESUMABLE_CHANGES = {f"training.{name}" for name in (
    "max_steps", "num_train_epochs", "push_to_hub", "hub_model_id", "hub_private_repo", "report_to", "logging_steps",
    "disable_tqdm", "dataloader_num_workers")}


def config_differences(before: dict, now: dict, prefix: str = "") -> list[tuple[str, object, object]]:
    """`(section.key, before, now)` for every setting that differs between two configs (`RunConfig.to_dict()`)."""
    differences = []
    for key in sorted(set(before) | set(now), key=str):
        old, new = before.get(key), now.get(key)
        if isinstance(old, dict) and isinstance(new, dict):
            differences += config_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            differences.append((f"{prefix}{key}", old, new))
    return differences


def publish_ignore(folder: str | Path) -> tuple[str, ...]:
    """The intermediate files that the recipe which wrote `folder` keeps there (its `training_config.yaml` names
    the recipe); none for a folder without one."""
    config_file = Path(folder) / "training_config.yaml"
    if not config_file.is_file():
        return ()
    name = (yaml.safe_load(config_file.read_text()) or {}).get("recipe")
    return get_recipe(name, source=str(config_file)).publish_ignore if name else ()


def training_arguments(arguments_class: type[TrainingArguments], run_config: RunConfig,
                       output_dir: str | Path) -> tuple[TrainingArguments, bool]:
    """The recipe's arguments from the `training` section, and whether to publish at the end.

    `bf16: auto` turns bf16 autocast on where the hardware runs it natively (`resolve_bf16`). On a machine
    without CUDA, training runs on the CPU (gloo for many processes) with each local process's share
    of the cores. `push_to_hub` is taken out of the Trainer's hands: the Trainer would upload at every save, before
    the folder has its card and sentence-transformers config; `Recipe.run` publishes the finished folder instead.
    """
    options = dict(run_config.training)
    push_to_hub = bool(options.pop("push_to_hub", False))
    if "bf16" in options:
        options["bf16"] = resolve_bf16(options["bf16"], f"training.bf16 of {run_config.source}")
    if not torch.cuda.is_available():
        options.setdefault("use_cpu", True)
        # `accelerate launch` without `--cpu` pins OMP_NUM_THREADS=1: give each local process its share of the cores
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # taskset
        share = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        if torch.get_num_threads() == 1 and share > 1:
            logger.warning("Training on the CPU with %d threads per process (OMP_NUM_THREADS was 1).", share)
            torch.set_num_threads(share)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            options.setdefault("ddp_backend", "gloo")
    where = f"training section of {run_config.source}"
    check_training_options(options, arguments_class, where)
    try:
        args = arguments_class(output_dir=str(output_dir), **options)
    except TypeError as error:
        raise ValueError(f"{where}: {error}") from None
    for name, value, valid, fix in (
            ("max_steps", args.max_steps, args.max_steps >= 1 or args.max_steps == -1,
             "a number of steps >= 1, or -1 to train num_train_epochs epochs"),
            ("learning_rate", args.learning_rate, args.learning_rate > 0, "a positive rate, e.g. 1e-4"),
            ("per_device_train_batch_size", args.per_device_train_batch_size, args.per_device_train_batch_size >= 1,
             "at least 1 example per batch"),
            ("gradient_accumulation_steps", args.gradient_accumulation_steps, args.gradient_accumulation_steps >= 1,
             "at least 1"),
            ("num_train_epochs", args.num_train_epochs, args.max_steps != -1 or args.num_train_epochs > 0,
             "a positive number of epochs (or set max_steps)")):
        if not valid:
            raise ValueError(f"{where}: {name}={value!r} makes no sense; use {fix}.")
    return args, push_to_hub


def check_training_options(options: dict, arguments_class: type[TrainingArguments], where: str) -> None:
    """Every training option is a field of `arguments_class` (the closest name is suggested for a typo), and a
    number where the field's default is a number, a bool where it is a bool: caught here with the setting's name, not
    as an obscure comparison error inside `TrainingArguments`."""
    fields = {f.name: f for f in dataclasses.fields(arguments_class) if f.init and f.name != "output_dir"}
    check_known_settings(options, fields, where)
    for name, value in options.items():
        kinds = set(typing.get_args(fields[name].type) or (fields[name].type,)) - {type(None)}
        if value is None or name == "bf16" or not kinds <= {bool, int, float}:
            continue  # None where the field allows it is TrainingArguments' to judge; bf16 takes `auto`
        if kinds == {bool} and not isinstance(value, bool):
            raise ValueError(f"{where}: {name}={value!r} is not true or false.")
        if bool not in kinds and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{where}: {name}={value!r} is not a number.")


def file_modes_as_umask(folder: Path) -> None:
    """Give every file of the saved folder the mode the user's umask gives new files: safetensors writes its weights
    readable by their owner alone (0600) while everything beside them is 0644."""
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            path.chmod(0o666 & ~umask)


TRAINING_TIME_FILE = "training_time.json"


class TrainingClock(TrainerCallback):
    """The training time of a run across its resumptions: each checkpoint records, in `training_time.json`, the
    seconds trained up to it (the checkpoint it resumed from, plus this session's time)."""

    def __init__(self, resumed_from: Path | None):
        recorded = resumed_from / TRAINING_TIME_FILE if resumed_from else None
        self.start_step = int(resumed_from.name.split("-")[-1]) if resumed_from else 0
        self.earlier_s = (json.loads(recorded.read_text())["train_runtime_s"]
                          if recorded is not None and recorded.is_file() else 0.0)
        self.started = time.perf_counter()

    def elapsed_s(self) -> float:
        return self.earlier_s + time.perf_counter() - self.started

    def on_save(self, args, state, control, **kwargs):
        if args.should_save:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            write_text_atomic(folder / TRAINING_TIME_FILE, json.dumps({"train_runtime_s": self.elapsed_s()}))


def whole_run(output: TrainOutput, log_history: list[dict], clock: TrainingClock) -> TrainOutput:
    """`Trainer.train`'s output for the whole run, across resumptions: `Trainer` reports the loss and time of its own
    session only. The loss before the resumption is the logged losses up to it, each the mean of its logging window;
    when the run resumed between two logging steps, the steps between the last log and the checkpoint are left out
    of the mean. The runtime is the clock's (`TrainingClock`)."""
    runtime = {**output.metrics, "train_runtime": clock.elapsed_s()}
    if clock.start_step == 0:
        return TrainOutput(output.global_step, output.training_loss, runtime)
    earlier_sum, covered = 0.0, 0
    for entry in log_history:
        if "loss" in entry and entry["step"] <= clock.start_step:
            earlier_sum += entry["loss"] * (entry["step"] - covered)  # the mean over its window
            covered = entry["step"]
    session_steps = output.global_step - clock.start_step
    loss = (earlier_sum + output.training_loss * session_steps) / max(covered + session_steps, 1)
    return TrainOutput(output.global_step, loss, runtime)


def last_complete_checkpoint(output_dir: Path) -> Path | None:
    """The newest `checkpoint-N` that holds a `trainer_state.json` (the Trainer writes it last); a checkpoint cut
    short by a kill is skipped with a warning rather than crashing the resume."""
    checkpoints = sorted(
        (path for path in output_dir.glob("checkpoint-*") if path.is_dir() and path.name.split("-")[-1].isdigit()),
        key=lambda path: int(path.name.split("-")[-1]), reverse=True,
    )
    for path in checkpoints:
        if (path / "trainer_state.json").is_file():
            return path
        logger.warning("Skipping %s: it has no trainer_state.json (the run was stopped while writing it).", path)
    return None


def resume_checkpoint(output_dir: Path) -> Path | None:
    """The checkpoint every process of the job resumes from: the main process's `last_complete_checkpoint`, sent to
    the others by name and looked for in their own output folder. When a process cannot see it (a node without the
    shared folder, or with an older copy), every process raises, naming them, rather than one restarting from step 0
    while the others resume, or all waiting on each other."""
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank, processes = ((torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1))
    chosen = [last_complete_checkpoint(output_dir) if rank == 0 else None]
    chosen = [chosen[0].name if chosen[0] else None]
    if distributed:
        torch.distributed.broadcast_object_list(chosen, src=0)
    checkpoint = output_dir / chosen[0] if chosen[0] else None
    visible = [checkpoint is None or (checkpoint / "trainer_state.json").is_file()] * processes
    if distributed:
        torch.distributed.all_gather_object(visible, visible[rank])
    blind = [index for index, seen in enumerate(visible) if not seen]
    if blind:
        raise FileNotFoundError(f"The main process resumes from {chosen[0]}, which process"
                                f"{'es' if len(blind) > 1 else ''} {', '.join(map(str, blind))} of {processes} cannot "
                                f"see in its {output_dir}: give every node the same output folder (a shared "
                                "filesystem, or copy the checkpoint there), or start over with --no_resume.")
    return checkpoint


def end_processes() -> None:
    """A process's distributed end, once its part of the run is done: the objects that still hold the process group
    collected first (a `DistributedDataParallel` wrapper and a `Trainer` live on in reference cycles until the
    garbage collector runs), then the group destroyed, while the interpreter is alive. Left to the interpreter's exit,
    the group is torn down with it, and a finished 2-process gloo run sometimes aborts there (SIGABRT, "terminate
    called without an active exception", a C++ thread destroyed unjoined; pytorch/pytorch#179291 describes the
    same): seen in CI after a training run, and after a script that only set up the group, met at a barrier and
    exited. No barrier here: the main process may still be evaluating."""
    gc.collect()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


class Recipe:
    """A training method: its config sections, arguments class and the steps that are its own (see the module's
    docstring for the contract)."""

    name: ClassVar[str]
    sections: ClassVar[dict[str, type]] = {}
    arguments_class: ClassVar[type[TrainingArguments]] = TrainingArguments
    example_config: ClassVar[str]
    card_template: ClassVar[str | Path | None] = None  # None: hub_cards/<name>.md
    publish_ignore: ClassVar[tuple[str, ...]] = ()  # intermediate files of the output folder, never published
    restart_files: ClassVar[tuple[str, ...]] = ()  # files an earlier run leaves that a new one would reuse
    launcher: ClassVar[str] = "accelerate launch"  # how the card's command starts scripts/train.py

    # whether the recipe reads `data.streaming` (its `load_data` can give a stream); False: it needs its whole
    # training data first, and a config that asks for a stream is refused
    streams_train_data: ClassVar[bool] = False

    def __init__(self, run_config: RunConfig, output_dir: str | Path):
        if run_config.data.streaming:
            self.check_streaming(run_config)
        self.run_config, self.output_dir = run_config, Path(output_dir)
        self.data_report: dict[str, dict] = {}  # what `load_data` used, written into eval_results.json
        self.batch_figures: dict[str, int] = {}  # the trainer's `batch_figures` (`train_model`), on the card

    def check_streaming(self, run_config: RunConfig) -> None:
        """Before any work, the settings `data.streaming` needs: a recipe that streams, a number of steps (a stream
        has no length), no length-grouped batches (they sort the whole corpus)."""
        source, training = run_config.source, run_config.training
        if not self.streams_train_data:
            raise ValueError(f"{source}: data.streaming is true, but recipe {self.name!r} needs its whole training "
                             "data before training; set data.streaming: false.")
        if not isinstance(training.get("max_steps"), int) or training["max_steps"] < 1:
            raise ValueError(f"{source}: data.streaming reads data.train as a stream, which has no length: set "
                             f"training.max_steps (now {training.get('max_steps')!r}) to the number of steps to train.")
        if training.get("train_sampling_strategy") == "group_by_length":
            raise ValueError(f"{source}: training.train_sampling_strategy: group_by_length sorts the whole corpus by "
                             "length, which a stream cannot; with data.streaming set it to random (batches come "
                             "through a shuffle buffer, data.shuffle_buffer).")

    def run(self, resume: bool = True, overwrite_output_dir: bool = False, keep_checkpoints: bool = True) -> dict:
        """Train, save, evaluate and write a Hub-ready folder; publish it when `training.push_to_hub` asks. Returns
        the evaluation results (also in `eval_results.json`; `{}` on processes other than the main one).

        The output folder must be new, empty, or hold a run of this package (`check_earlier_run`); with
        `overwrite_output_dir` a folder of other files is written over. Without `keep_checkpoints` the finished
        run's checkpoints are removed (a finished run needs none to resume)."""
        args, push_to_hub = training_arguments(self.arguments_class, self.run_config, self.output_dir)
        train, evaluation, tokenizer = self.prepare(args, resume, overwrite_output_dir)
        set_seed(args.seed)  # before the weights are drawn: the same config gives the same run
        model, output = self.fit(train, tokenizer, args, resume)
        if args.process_index != 0:
            return {}
        model = self.save(model, tokenizer)
        file_modes_as_umask(self.output_dir)
        results = self.evaluate(model, tokenizer, evaluation)
        results["data"] = self.data_report
        results["training"] = {"train_examples": len(train) if isinstance(train, Sized) else "stream",
                               "global_step": output.global_step,
                               "train_runtime_s": round(output.metrics["train_runtime"], 1),
                               "train_loss": round(output.training_loss, 4),
                               "bf16_autocast": bool(args.bf16),  # `bf16: auto` as resolved
                               "processes": args.world_size,
                               # examples (pairs) per optimizer step: every process's batch, times accumulation
                               "global_batch_size": args.per_device_train_batch_size * args.world_size
                               * args.gradient_accumulation_steps, **self.batch_figures}
        write_text_atomic(self.output_dir / "eval_results.json",
                          without_local_paths(json.dumps(results, indent=2), self.output_dir))
        self.card(model, results)
        if not keep_checkpoints:
            for checkpoint in self.output_dir.glob("checkpoint-*"):
                shutil.rmtree(checkpoint)
        if push_to_hub:
            print(publish(self.output_dir, args.hub_model_id or self.output_dir.name,
                          private=bool(args.hub_private_repo), ignore=self.publish_ignore))
        return results

    def prepare(self, args: TrainingArguments, resume: bool = True,
                overwrite_output_dir: bool = False) -> tuple[object, dict, object]:
        """What `run` does before training, and all that `ems-prepare` does: the checks, the data, the output folder
        claimed with the run's config, the tokenizer and the training data. Returns `(train, evaluation, tokenizer)`."""
        self.check_earlier_run(resume, overwrite_output_dir)
        self.check_evaluation_suite()
        train, evaluation = self.load_data()
        if not resume and args.process_index == 0:
            self.start_over()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if args.process_index == 0:  # first: the folder is this run's from now on, resumable with this config
            write_text_atomic(self.output_dir / "training_config.yaml",
                              yaml.safe_dump(self.run_config.to_dict(), sort_keys=False))
        tokenizer = self.prepare_tokenizer(train, args)
        return self.prepare_train_data(train, tokenizer, args), evaluation, tokenizer

    # --- an earlier run in the output folder --------------------------------------------------------------------
    def check_earlier_run(self, resume: bool, overwrite_output_dir: bool = False) -> None:
        """Before any work: a folder that holds files but no run of this package is refused (unless
        `overwrite_output_dir`): a user's README.md or model is not written over. A folder that holds a run
        (`training_config.yaml`) resumes only with the same config: a changed setting (but for `RESUMABLE_CHANGES`)
        is refused with the differences listed."""
        saved_file = self.output_dir / "training_config.yaml"
        if not saved_file.is_file():
            others = sorted(path.name for path in self.output_dir.iterdir()) if self.output_dir.is_dir() else []
            if others and not overwrite_output_dir:
                listed = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
                raise ValueError(f"{self.output_dir} holds files that are not a run of this package ({listed}), which "
                                 "this run would write over. Choose a new or empty --output_dir, or pass "
                                 "--overwrite_output_dir to write over them.")
            return
        if not resume:
            return
        saved = yaml.safe_load(saved_file.read_text()) or {}
        changes = config_differences(saved, self.run_config.to_dict())
        allowed = [f"{key}: {before!r} -> {now!r}" for key, before, now in changes if key in RESUMABLE_CHANGES]
        differences = [f"{key}: {before!r} -> {now!r}" for key, before, now in changes if key not in RESUMABLE_CHANGES]
        if allowed and not differences:
            logger.warning("Resuming the run in %s with changed settings: %s.", self.output_dir, "; ".join(allowed))
        if differences:
            raise ValueError(f"{self.output_dir} holds a run of another config ({saved_file}), which this run would "
                             f"resume: {'; '.join(differences)}. Run with the config it was trained with to resume, "
                             "pass --no_resume to start over in that folder, or choose another --output_dir.")

    def check_evaluation_suite(self) -> None:
        """The config's evaluation suite, checked before any work (its files, tasks and settings: `load_suite`); it
        is built again for the model's languages when training starts."""
        if not self.run_config.evaluation.suite:
            return
        suite_logger = logging.getLogger(load_suite.__module__)
        level = suite_logger.level
        suite_logger.setLevel(logging.ERROR)  # `languages: model` without a model yet is no news
        try:
            load_suite(self.run_config.evaluation.suite)
        finally:
            suite_logger.setLevel(level)

    def start_over(self) -> None:
        """Remove what an earlier run left in the output folder and a new run would otherwise reuse: checkpoints,
        the saved config, `restart_files` and the recipe's intermediate folders (`publish_ignore`)."""
        for pattern in ("checkpoint-*", "training_config.yaml", *self.restart_files, *self.publish_ignore):
            for path in self.output_dir.glob(pattern):
                logger.warning("Starting over (--no_resume): removing %s", path)
                shutil.rmtree(path) if path.is_dir() else path.unlink()

    # --- the steps ---------------------------------------------------------------------------------------------
    def load_data(self) -> tuple[datasets.Dataset, dict[str, datasets.Dataset]]:
        raise NotImplementedError

    def prepare_tokenizer(self, train, args: TrainingArguments):
        raise NotImplementedError

    def prepare_train_data(self, train, tokenizer, args: TrainingArguments):
        return train

    def fit(self, train, tokenizer, args: TrainingArguments, resume: bool) -> tuple[PreTrainedModel, TrainOutput]:
        """The model built and trained (`train_model`)."""
        return self.train_model(self.build_model(tokenizer), train, tokenizer, args, resume)

    def build_model(self, tokenizer) -> PreTrainedModel:
        raise NotImplementedError

    def make_trainer(self, model, args, train, tokenizer) -> Trainer:
        raise NotImplementedError

    def train_model(self, model, train, tokenizer, args: TrainingArguments,
                    resume: bool) -> tuple[PreTrainedModel, TrainOutput]:
        """`make_trainer`, the config's evaluation suite run during training, `Trainer.train` from the last complete
        checkpoint of the output folder (unless `resume` is off), and the model saved to the output folder."""
        trainer = self.make_trainer(model, args, train, tokenizer)
        if self.run_config.evaluation.suite:  # run by Trainer.evaluate at training.eval_strategy / eval_steps
            trainer.set_evaluation_suite(load_suite(self.run_config.evaluation.suite,
                                                    getattr(model.config, "languages", None)))
        checkpoint = resume_checkpoint(self.output_dir) if resume else None
        if checkpoint:
            logger.warning("Resuming from %s", checkpoint)
        clock = TrainingClock(checkpoint)
        trainer.add_callback(clock)
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        trainer.save_model(str(self.output_dir))
        # a trainer of the package states its batches; a plugin's plain `Trainer` does not
        self.batch_figures = trainer.batch_figures() if isinstance(trainer, LossTermLoggingMixin) else {}
        return trainer.model, whole_run(output, trainer.state.log_history, clock)

    def save(self, model, tokenizer):
        """Files beside what the training saved (main process); returns the model to evaluate."""
        return model

    def evaluate(self, model, tokenizer, evaluation: dict) -> dict:
        raise NotImplementedError

    # --- the card ----------------------------------------------------------------------------------------------
    def summary(self, results: dict) -> dict:
        """What the train command prints at the end: the headline figures of `results`."""
        raise NotImplementedError

    def card(self, model, results: dict) -> None:
        """Write the folder's `README.md` from the recipe's template (`card_template`)."""
        path = Path(self.card_template) if self.card_template is not None else template(self.name)
        render_model_card(self.output_dir, path, self.card_data(model, results), config=model.config,
                          **self.reproduction(results), **self.card_context(model, results))

    def card_data(self, model, results: dict) -> dict:
        """`ModelCardData` fields of the card (`library_name`, `tags`, `eval_results`, ...)."""
        raise NotImplementedError

    def card_context(self, model, results: dict) -> dict:
        """The values the card template reads besides `config` and `reproduction`."""
        raise NotImplementedError

    def reproduction(self, results: dict) -> dict[str, str]:
        """What every card says of how the model was made: the command (with its `--set` overrides), the run's
        settings as YAML and the training summary."""
        overrides = "".join(f" --set {shlex.quote(value)}" for value in self.run_config.overrides)
        return {
            "command": f"{self.launcher} scripts/train.py --config {self.run_config.source} --output_dir "
                       f"{self.output_dir}{overrides}",
            "hyperparameters": yaml.safe_dump(self.run_config.to_dict(), sort_keys=False).strip(),
            "training_summary": ", ".join(f"{k}: {v}" for k, v in results.get("training", {}).items()),
        }


def run_recipe(run_config: RunConfig, output_dir: str | Path, **options) -> dict:
    """Run the recipe the config names (`Recipe.run` with `options`: resume, overwrite_output_dir,
    keep_checkpoints) into `output_dir`."""
    return get_recipe(run_config.recipe, source=run_config.source)(run_config, output_dir).run(**options)
