"""The multi-task dual encoder (Chidambaram et al.): `recipe.py` (the recipe and its `tasks` section), `tasks.py`
(each task defined once: columns, data, loss), `trainer.py` (task cycling, one task per optimisation step)."""

from .recipe import MultiTaskRecipe
from .tasks import TASKS, Task, task_loss
from .trainer import MultiTaskTrainer, MultiTaskTrainingArguments, TaskCycleBatchSampler, TaskDatasets

__all__ = ["MultiTaskRecipe", "MultiTaskTrainer", "MultiTaskTrainingArguments", "TASKS", "Task",
           "TaskCycleBatchSampler", "TaskDatasets", "task_loss"]
