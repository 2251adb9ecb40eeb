"""Multi-task training by cycling tasks (Chidambaram et al., sec. 3.2): one optimisation step of one task at a time,
the tasks in turn, each from its own `datasets` source.

As in sentence-transformers' multi-dataset training (`RoundRobinBatchSampler`, a loss per dataset picked in
`compute_loss` by the batch's dataset name), the task datasets are concatenated and a batch sampler decides which
task each batch comes from; the batch carries its `task` and `MultiTaskTrainer.compute_loss` applies that task's
loss. Unlike the round-robin sampler, the schedule is a pure function of the step number, and every step's batches
are drawn together for all processes and gradient-accumulation micro-steps, so under several processes every
process runs the same task at every step (accelerate hands process `r` every P-th batch).
"""

import bisect
import zlib
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader
from transformers import Trainer

from modeling_ems.modeling_dual_encoder import TASK_SIDES, DualEncoderMultiTaskOutput, WordAndCharNgramEmbedding

from ...arguments import GradCacheTrainingArguments
from ...evaluation.training import SuiteEvaluationMixin
from ...full_weights import FullWeightsSaveMixin
from ...grad_cache import cached_objective
from ...length_grouping import LengthGroupingMixin
from ...loss_logging import LossTermLoggingMixin
from .tasks import TASKS, task_loss


class TaskDatasets(ConcatDataset):
    """The task datasets `{task: dataset}` as one dataset whose rows carry their `task`."""

    def __init__(self, datasets: dict[str, object]):
        empty = [task for task, dataset in datasets.items() if len(dataset) == 0]
        if not datasets or empty:
            raise ValueError(f"Multi-task training needs data for every task; no data for {empty or 'any task'}.")
        self.tasks = list(datasets)
        super().__init__(list(datasets.values()))

    def sizes(self) -> dict[str, int]:
        return {task: len(dataset) for task, dataset in zip(self.tasks, self.datasets)}

    def language_groups(self, tasks, column: str = "lang") -> dict[str, list[list[int]]]:
        """For each of `tasks`, the indices of its rows in one list per value of `column` (its language)."""
        groups = {}
        for task in tasks:
            dataset = self.datasets[self.tasks.index(task)]
            if column not in getattr(dataset, "column_names", ()):
                raise ValueError(f"The {task} task's data has no {column!r} column, so its batches cannot be drawn "
                                 f"one language at a time; add the column or set tasks.{task}.one_language_per_batch"
                                 ": false.")
            by_value: dict[str, list[int]] = {}
            for index, value in enumerate(dataset[column]):
                by_value.setdefault(value, []).append(index)
            groups[task] = [by_value[value] for value in sorted(by_value)]
        return groups

    def __getitem__(self, index: int) -> dict:
        part = bisect.bisect_right(self.cumulative_sizes, index)
        start = self.cumulative_sizes[part - 1] if part else 0
        return {**self.datasets[part][index - start], "task": self.tasks[part]}


class TaskCycleBatchSampler:
    """Batches for task cycling: step `s` trains task `tasks[s % T]` (sec. 3.2), and its `replicas` batches
    (processes x gradient-accumulation steps) are yielded one after the other, all of that task.

    Each task reads its own data in passes: a pass is a permutation of the task's rows (seeded by `seed`, the
    task's name and the pass number, the same in every process), cut into steps of `replicas` batches of the
    task's batch size; a task whose data runs out starts its next pass, whatever the other tasks do. An epoch is as
    many cycles as the largest task needs for one pass. Everything is a function of (epoch, step): resuming at a
    step gives the batches an uninterrupted run would have had.

    Args:
        sizes: rows of each task, in the order of the concatenated dataset (`TaskDatasets.sizes()`).
        batch_sizes: examples per batch of each task.
        replicas: batches per optimisation step: number of processes x gradient-accumulation steps.
        groups: for some tasks, their rows (indices into the task's dataset) in groups, e.g. one per language: each
            batch of such a task is drawn from one group (a pass: each group permuted and cut into batches, the
            remainders dropped, the batches of all groups in a seeded random order), so that a monolingual task's
            in-batch negatives cannot be told apart by their language alone.
    """

    def __init__(self, sizes: dict[str, int], batch_sizes: dict[str, int], replicas: int = 1, seed: int = 0,
                 groups: dict[str, list[list[int]]] | None = None):
        missing = sorted(set(sizes) - set(batch_sizes))
        if missing:
            raise ValueError(f"No batch size for the tasks {missing}.")
        self.tasks, self.batch_sizes, self.replicas, self.seed = list(sizes), batch_sizes, replicas, seed
        self.offsets = dict(zip(self.tasks, [0] + list(torch.tensor(list(sizes.values())).cumsum(0).tolist())))
        self.sizes, self.groups = sizes, groups or {}
        self.steps_per_pass = {}
        for task in self.tasks:
            needed, size = batch_sizes[task] * replicas, batch_sizes[task]
            batches = (sum(len(group) // size for group in self.groups[task]) if task in self.groups
                       else sizes[task] // size)
            if batches < replicas:
                grouped = " in one group (language) per batch" if task in self.groups else ""
                raise ValueError(f"The {task} task has {sizes[task]} examples, but one step needs {needed} "
                                 f"({size} per batch{grouped} x {replicas} batches); add data or lower its "
                                 "batch size.")
            self.steps_per_pass[task] = batches // replicas
        self.cycles_per_epoch = max(self.steps_per_pass.values())
        self.epoch = 0
        self._permutations: dict[tuple[str, int], torch.Tensor] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def task_at(self, step: int) -> str:
        """The task of optimisation step `step` (0-based, counted from the start of training)."""
        return self.tasks[step % len(self.tasks)]  # sec. 3.2: cycle through the tasks, one step each

    def _permutation(self, task: str, pass_number: int) -> torch.Tensor:
        key = (task, pass_number)
        if key not in self._permutations:
            # seeded by the task's name, not its position: a task reads the same batches alone or among others
            generator = torch.Generator().manual_seed(self.seed + zlib.crc32(task.encode()) + 1_000_003 * pass_number)
            if task in self.groups:  # whole batches of one group each, in random order: cut like any permutation
                size, batches = self.batch_sizes[task], []
                for group in self.groups[task]:
                    rows = torch.tensor(group, dtype=torch.long)[torch.randperm(len(group), generator=generator)]
                    batches += list(rows[: len(rows) // size * size].split(size))
                order = torch.cat([batches[i] for i in torch.randperm(len(batches), generator=generator)])
            else:
                order = torch.randperm(self.sizes[task], generator=generator)
            self._permutations = {key: order, **{k: v for k, v in self._permutations.items() if k[0] != task}}
        return self._permutations[key]

    def step_batches(self, step: int) -> list[list[int]]:
        """The `replicas` batches (indices into the concatenated dataset) of optimisation step `step`."""
        task = self.task_at(step)
        task_step = step // len(self.tasks)  # how many steps of this task came before
        pass_number, position = divmod(task_step, self.steps_per_pass[task])
        order, size = self._permutation(task, pass_number), self.batch_sizes[task]
        first = position * self.replicas * size
        return [(order[first + r * size : first + (r + 1) * size] + self.offsets[task]).tolist()
                for r in range(self.replicas)]

    def __len__(self) -> int:
        return self.cycles_per_epoch * len(self.tasks) * self.replicas

    def __iter__(self):
        steps = self.cycles_per_epoch * len(self.tasks)
        for step in range(self.epoch * steps, (self.epoch + 1) * steps):
            yield from self.step_batches(step)


@dataclass
class MultiTaskTrainingArguments(GradCacheTrainingArguments):
    """`GradCacheTrainingArguments` for task cycling. Each task's batch size comes with its data
    (`MultiTaskTrainer(task_batch_sizes=...)`); `per_device_train_batch_size` is the default."""

    ddp_find_unused_parameters: bool | None = field(
        default=True, metadata={"help": "A step trains one task's head: the other heads get no gradient."}
    )
    mask_false_negatives: bool = field(
        default=True, metadata={"help": (
            "Mask in-batch candidates (and hard negatives) whose text equals a row's own answer, or that answer an "
            "equal query, out of the ranking losses: in a multi-parallel corpus two rows of one source would "
            "otherwise count each other's translations as negatives.")}
    )
    embedding_update_multiplier: float = field(
        default=1.0, metadata={"help": (
            "Factor on the updates of the word and character n-gram embeddings (sec. 3.2: the paper multiplies "
            "their gradient updates by 100 against vanishing gradients, with SGD). Applied to their learning rate: "
            "under SGD that is the paper's multiplier, and Adam(W), which normalises the gradient's scale away, "
            "would ignore a gradient multiplier. 1: no change.")}
    )

    def __post_init__(self):
        super().__post_init__()
        if not self.embedding_update_multiplier > 0:
            raise ValueError(f"embedding_update_multiplier={self.embedding_update_multiplier}: use a factor > 0 "
                             "(1: the base learning rate; the paper: 100).")


def embedding_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters sec. 3.2's update multiplier applies to: the word embeddings (`model.get_input_embeddings()`)
    and, for `input_type="char_ngram"`, the character n-gram embeddings, found by module rather than by name. The
    n-gram projection and the position embeddings keep the base rate."""
    embedding = model.get_input_embeddings()
    parameters = [embedding.weight]
    if isinstance(embedding, WordAndCharNgramEmbedding):
        parameters.append(embedding.ngram_embeddings.weight)
    return parameters


class MultiTaskTrainer(FullWeightsSaveMixin, LengthGroupingMixin, LossTermLoggingMixin, SuiteEvaluationMixin, Trainer):
    """Trains a `DualEncoderMultiTaskForPreTraining` on `TaskDatasets` with a `TaskCollator`, one task per step
    (`TaskCycleBatchSampler`), and logs each task's loss as `<task>_loss`. With `mini_batch_size`, the ranking tasks'
    batches run through GradCache (`cached_loss`); NLI batches, whose head reads a premise with its hypothesis, are
    encoded whole.

    Args:
        task_batch_sizes: examples per batch of each task (default: `per_device_train_batch_size`).
        task_groups: tasks whose batches each come from one group of their rows (`TaskCycleBatchSampler`'s
            `groups`; `TaskDatasets.language_groups`).
    """

    def __init__(self, *args, task_batch_sizes: dict[str, int] | None = None,
                 task_groups: dict[str, list[list[int]]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.train_dataset, TaskDatasets):
            raise ValueError("MultiTaskTrainer trains on TaskDatasets({task: dataset, ...}).")
        if self.args.n_gpu > 1:  # nn.DataParallel would cut a translation batch's sides and negatives apart
            raise ValueError(f"This process sees {self.args.n_gpu} GPUs, so the Trainer would split each batch with "
                             "nn.DataParallel, which cuts a task batch's sides (and a translation batch's hard "
                             "negatives) apart and trains on mismatched rows. Run one process per GPU instead: "
                             f"accelerate launch --multi_gpu --num_processes {self.args.n_gpu} scripts/train.py ... "
                             "(or CUDA_VISIBLE_DEVICES=0 for one GPU).")
        model = self.accelerator.unwrap_model(self.model)
        model.config.check_tasks(self.train_dataset.tasks)
        if self.args.embedding_update_multiplier != 1.0 and self.optimizer is not None:
            raise ValueError(f"embedding_update_multiplier={self.args.embedding_update_multiplier} splits the "
                             "optimizer groups the Trainer builds; with your own optimizer, give the embeddings "
                             "their learning rate in it and leave the multiplier at 1.")
        self.task_batch_sizes = {task: (task_batch_sizes or {}).get(task, self.args.per_device_train_batch_size)
                                 for task in self.train_dataset.tasks}
        self.task_groups = task_groups or {}
        self._task_batches: dict[str, tuple[int, int]] = {}  # task: (examples, rows) of its first training batch

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        """`Trainer.create_optimizer` (its weight-decay groups and optimizer), then with
        `embedding_update_multiplier` != 1 each group split into its `embedding_parameters` and the rest, the
        embeddings' part at the multiplier times the group's learning rate (sec. 3.2). The scheduler scales each
        group's own initial rate, so the ratio holds through warm-up and decay; the split is the same at every
        start, so a checkpoint's optimizer state loads on resume. The embedding groups come last: the logged
        `learning_rate` (the first group's) stays the base rate."""
        created = self.optimizer is None
        optimizer = super().create_optimizer(model)
        multiplier = self.args.embedding_update_multiplier
        if created and multiplier != 1.0:
            opt_model = self.accelerator.unwrap_model(self.model if model is None else model)
            embeddings = {id(p) for p in embedding_parameters(opt_model)}
            if {id(p) for group in optimizer.param_groups for p in group["params"]} & embeddings != embeddings:
                raise ValueError(f"embedding_update_multiplier={multiplier}: the optimizer does not train all the "
                                 "embeddings (frozen, or flattened by FSDP); train them or leave the multiplier at 1.")
            groups, optimizer.param_groups = optimizer.param_groups, []
            for is_embedding, factor in ((False, 1.0), (True, multiplier)):
                for group in groups:
                    params = [p for p in group["params"] if (id(p) in embeddings) == is_embedding]
                    if params:
                        optimizer.add_param_group({**group, "params": params, "lr": group["lr"] * factor})  # sec. 3.2
        return optimizer

    def task_sampler(self) -> TaskCycleBatchSampler:
        return TaskCycleBatchSampler(self.train_dataset.sizes(), self.task_batch_sizes,
                                     replicas=self.args.world_size * self.args.gradient_accumulation_steps,
                                     seed=self.args.seed, groups=self.task_groups)

    def get_train_dataloader(self) -> DataLoader:
        loader = DataLoader(self.train_dataset, batch_sampler=self.task_sampler(), collate_fn=self.data_collator,
                            num_workers=self.args.dataloader_num_workers, pin_memory=self.args.dataloader_pin_memory)
        return self.accelerator.prepare(loader)

    def objective(self, model, inputs, outputs) -> torch.Tensor:
        """The loss of a task batch from the model's `outputs` for it (`task_loss`, with the config's similarity)."""
        config = self.accelerator.unwrap_model(model).config
        return task_loss(inputs["task"], outputs, inputs.get("labels"), similarity=config.similarity,
                         temperature=config.temperature if config.similarity == "cosine" else 1.0,
                         text_ids=inputs.get("text_ids") if self.args.mask_false_negatives else None,
                         matryoshka_dims=self.args.matryoshka_dims, matryoshka_weights=self.args.matryoshka_weights)

    def cached_loss(self, model, inputs) -> torch.Tensor:
        """A ranking task's loss through GradCache (`cached_objective`): the rows encoded `mini_batch_size`
        examples' worth at a time, each through its side's head (`row_sides`); the ranking loss, which reads only
        the rows' embeddings, on the whole batch."""
        task, n, rows = inputs["task"], int(inputs["num_examples"]), inputs["input_ids"].shape[0]
        sides = len(TASK_SIDES[task])
        row_sides = (torch.arange(rows, device=inputs["input_ids"].device) // n).clamp(max=sides)  # K: side `sides`
        sizes = [n] * sides + ([rows - sides * n] if task == "translation" else [])

        def objective(embeddings):
            outputs = DualEncoderMultiTaskOutput(task_embeddings=tuple(embeddings.split(sizes)))
            loss = self.objective(model, inputs, outputs)
            return loss, {f"{task}_loss": loss}

        loss, terms = cached_objective(
            model, {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"],
                    "row_sides": row_sides}, self.args.mini_batch_size * (rows // n),
            lambda model, part: model(input_ids=part["input_ids"], attention_mask=part["attention_mask"], task=task,
                                      row_sides=part["row_sides"]).task_embeddings,
            objective, no_sync=lambda: self.accelerator.no_sync(model))
        self.record_loss_terms(terms)
        return loss

    def batch_figures(self) -> dict[str, int]:
        """For each task trained so far, its global batch (examples of every process) and, for a ranking task
        (eq. 2), the candidates each query is ranked among: every process's answers and their hard negatives."""
        figures = {}
        for task, (examples, rows) in self._task_batches.items():
            figures[f"{task}_global_batch"] = examples * self.args.world_size
            if TASKS[task].label_column is None:  # ranking; rows beyond the sides are K negatives per example
                negatives = rows - len(TASK_SIDES[task]) * examples
                figures[f"{task}_in_batch_candidates"] = (examples + negatives) * self.args.world_size
        if self.args.mini_batch_size:
            figures["mini_batch_size"] = self.args.mini_batch_size
        return figures

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        task = inputs["task"]
        if model.training:
            self._task_batches.setdefault(task, (int(inputs["num_examples"]), inputs["input_ids"].shape[0]))
        if (self.args.mini_batch_size and task != "nli" and model.training and torch.is_grad_enabled()
                and not return_outputs):
            return self.cached_loss(model, inputs)
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], task=task,
                        num_examples=inputs["num_examples"])
        loss = self.objective(model, inputs, outputs)
        self.record_loss_terms({f"{task}_loss": loss})
        return (loss, outputs) if return_outputs else loss
