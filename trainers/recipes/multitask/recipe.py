"""`recipe: multitask`: the multi-task dual encoder (Chidambaram et al.) trained from scratch by cycling tasks.

What is this recipe's own: the `tasks` section (one `datasets` source and batch size per task: translation ranking on
parallel pairs, conversational response, quick-thought on documents, NLI), `DualEncoderMultiTaskForPreTraining`
built from the `model` section and the tokenizer (subword or word + character n-gram input), `MultiTaskTrainer` (one
task per optimisation step) and the card `hub_cards/multitask.md`; each task is defined once in `tasks.py`. The
SentencePiece vocabulary, data checks and held-out retrieval beside TF-IDF are `ScratchEncoderRecipe`'s, as for EMS;
checkpoints and resume `Recipe`'s.
"""

import logging
from dataclasses import dataclass, fields
from pathlib import Path

from modeling_ems import DualEncoderMultiTaskConfig, DualEncoderMultiTaskForPreTraining

from ...collators import SidesCollator, TaskCollator
from ...tokenizer import tokenizer_languages
from ..base import register_recipe
from ..encoder import ScratchEncoderRecipe, TokenizerSettings
from .tasks import TASKS, translation_task
from .trainer import MultiTaskTrainer, MultiTaskTrainingArguments, TaskDatasets

logger = logging.getLogger(__name__)


@dataclass
class TaskSettings:
    """One task of the `tasks` section."""

    source: str | None = None  # file, folder or Hub name (translation: data.train instead); null: the shipped subset
    batch_size: int | None = None  # null: training.per_device_train_batch_size
    max_examples: int | None = None
    hard_negatives: int = 0  # translation only: K mined negatives per pair (the source must hold `negatives`)
    fallback_to_shipped: bool = True  # a local source that does not exist -> the subset the package ships
    # monolingual tasks (response, quick_thought): each batch from one language (the rows' `lang`), so that in-batch
    # negatives cannot be told apart by their language alone (the paper mirrors these tasks per language); null: true
    one_language_per_batch: bool | None = None

    def __post_init__(self):
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"tasks.*.batch_size={self.batch_size}: use a positive batch size.")
        if self.hard_negatives < 0:
            raise ValueError(f"tasks.translation.hard_negatives={self.hard_negatives}: use K >= 0 (the paper: 5).")


def task_settings(section: dict, source: str) -> dict[str, TaskSettings]:
    """The `tasks` section, checked: known task names, known settings, hard negatives for translation only. A key
    `task.setting` (what `--set tasks.translation.hard_negatives=5` gives) sets that one setting of the task."""
    nested: dict[str, dict] = {}
    for key, values in (section or {}).items():
        task, dot, setting = key.partition(".")
        nested.setdefault(task, {}).update({setting: values} if dot else dict(values or {}))
    section = nested
    if not section:
        raise ValueError(f"{source}: the tasks section names no task; give some of {list(TASKS)}.")
    unknown = sorted(set(section) - set(TASKS))
    if unknown:
        raise ValueError(f"{source}: unknown tasks {unknown}; the multi-task dual encoder has {list(TASKS)}.")
    known = {f.name for f in fields(TaskSettings)}
    settings = {}
    for task, values in section.items():
        extra = sorted(set(values) - known)
        if extra:
            raise ValueError(f"{source}: tasks.{task} has unknown settings {extra}; settings: {sorted(known)}.")
        settings[task] = TaskSettings(**values)
        if settings[task].hard_negatives and not TASKS[task].hard_negatives:
            raise ValueError(f"{source}: tasks.{task}.hard_negatives: hard negatives are for translation ranking only.")
        if settings[task].one_language_per_batch is None:
            settings[task].one_language_per_batch = TASKS[task].monolingual
        elif settings[task].one_language_per_batch and not TASKS[task].monolingual:
            raise ValueError(f"{source}: tasks.{task}.one_language_per_batch: only monolingual tasks "
                             f"({[name for name, t in TASKS.items() if t.monolingual]}) draw batches per language.")
    return settings


@register_recipe
class MultiTaskRecipe(ScratchEncoderRecipe):
    name = "multitask"
    sections = {"model": dict, "tokenizer": TokenizerSettings, "tasks": dict}
    arguments_class = MultiTaskTrainingArguments
    example_config = "multitask_default"
    config_class = DualEncoderMultiTaskConfig
    card_tags = ("dual-encoder", "multi-task")
    matryoshka_objective = "each ranking loss (eq. 2) was taken"
    streams_train_data = False  # tasks are mixed and mined from whole datasets

    def __init__(self, run_config, output_dir):
        super().__init__(run_config, output_dir)
        self.tasks = task_settings(run_config.tasks, run_config.source)
        if "translation" not in self.tasks:
            raise ValueError(f"{run_config.source}: the tasks need translation, the bridge task that aligns languages "
                             "(sec. 2.2), and the source of the vocabulary and of the evaluation pairs.")
        translation = self.tasks["translation"]
        if translation.source is not None or translation.max_examples is not None:
            raise ValueError(f"{run_config.source}: translation pairs come from data.train and data.max_train_pairs "
                             "(as for every pair-trained recipe); move tasks.translation.source / max_examples there.")
        if "tasks" in run_config.model:  # before any work: the model must have a head for every task it trains
            DualEncoderMultiTaskConfig(tasks=run_config.model["tasks"]).check_tasks(list(self.tasks))
        self._evaluation_texts: set[str] = set()

    def load_data(self):
        """`Recipe.load_data` (translation pairs from `data.train`, evaluation sets without training texts); with
        hard negatives, the same pairs with their mined `negatives`."""
        train, evaluation = super().load_data()
        hard_negatives = self.tasks["translation"].hard_negatives
        if hard_negatives:
            train = translation_task(self.train_name, self.run_config.data.max_train_pairs, hard_negatives)
        self._evaluation_texts = {text for pairs in evaluation.values() for text in (*pairs["src"], *pairs["tgt"])}
        return train, evaluation

    def source_of(self, task: str) -> str | Path:
        """The task's configured source, or the shipped subset when it is not given or (a local path) not there."""
        configured = self.tasks[task].source
        shipped = TASKS[task].shipped
        if configured is None:
            if shipped is None:
                raise ValueError(f"{self.run_config.source}: tasks.{task}.source is not set and the package ships no "
                                 f"{task} data; point it at a dataset.")
            return shipped
        path = Path(configured)
        looks_local = path.suffix or configured.startswith((".", "/", "~"))
        if looks_local and not path.exists() and shipped is not None and self.tasks[task].fallback_to_shipped:
            logger.warning("tasks.%s.source %s does not exist; training %s on the shipped subset %s.", task,
                           configured, task, shipped)
            return shipped
        return configured

    def prepare_train_data(self, train, tokenizer, args) -> TaskDatasets:
        """Every task's dataset, in the order of the tasks section. Monolingual tasks keep the tokenizer's languages;
        examples with a text of the evaluation pairs are removed (counted in the data report)."""
        languages = tokenizer_languages(tokenizer)
        datasets = {}
        for task, settings in self.tasks.items():
            load = TASKS[task].load
            if load is None:  # translation: the recipe's pairs
                datasets[task] = train
                continue
            source = self.source_of(task)
            with args.main_process_first(desc=f"{task} data"):
                dataset = load(source, languages, settings.max_examples)
            columns, seen = TASKS[task].columns, self._evaluation_texts
            datasets[task] = dataset.filter(lambda row: not any(row[column] in seen for column in columns))
            self.data_report[task] = {"source": str(source), "examples": len(datasets[task]),
                                      "removed_seen_in_evaluation": len(dataset) - len(datasets[task])}
        return TaskDatasets(datasets)

    def build_model(self, tokenizer) -> DualEncoderMultiTaskForPreTraining:
        config = self.model_config(tokenizer)
        model = DualEncoderMultiTaskForPreTraining(config)
        if config.input_type == "char_ngram":
            special = set(tokenizer.all_special_ids)
            pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
            model.encoder.set_ngram_vocabulary([None if i in special else p for i, p in enumerate(pieces)])
        return model

    def model_config(self, tokenizer) -> DualEncoderMultiTaskConfig:
        return super().model_config(tokenizer, tasks=list(self.tasks))

    def make_trainer(self, model, args, train, tokenizer) -> MultiTaskTrainer:
        length = model.config.max_position_embeddings
        hard_negatives = self.tasks["translation"].hard_negatives
        collators = {task: SidesCollator(tokenizer, length, TASKS[task].columns,
                                         negatives_column="negatives" if TASKS[task].hard_negatives and hard_negatives
                                         else None,
                                         label_column=TASKS[task].label_column)
                     for task in train.tasks}
        grouped = [task for task, settings in self.tasks.items() if settings.one_language_per_batch]
        return MultiTaskTrainer(model=model, args=args, train_dataset=train, data_collator=TaskCollator(collators),
                                processing_class=tokenizer,
                                task_batch_sizes={task: s.batch_size for task, s in self.tasks.items() if s.batch_size},
                                task_groups=train.language_groups(grouped))

    def training_sources(self) -> list[str]:
        """data.train and the source every other task trained on (`prepare_train_data` reports it)."""
        return [self.train_name, *(self.data_report[task]["source"] for task in self.tasks if task in self.data_report)]

    def card_context(self, model, results: dict) -> dict:
        """The encoder card's values and each task's data: `(task, source, examples)`."""
        data = results.get("data", {})
        task_data = [(task, data.get(task, {}).get("source", self.train_name),
                      data.get(task, {}).get("examples", data.get("train", {}).get("pairs")))
                     for task in self.tasks]
        return {**super().card_context(model, results), "task_data": task_data}
