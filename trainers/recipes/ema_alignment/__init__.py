"""EMA-teacher alignment (Ham & Kim): `recipe.py` (the stages: before, stage 1, alignment, export), `student.py`
(the `student` section), `stage1.py` (similarity fine-tuning, sec. 5.1), `trainer.py` (the EMA teacher, eqs. 1-2)."""

from .recipe import EMAAlignmentRecipe
from .trainer import EMATeacher, EMATeacherTrainer, EMATrainingArguments, add_lora, ema_tau

__all__ = ["EMAAlignmentRecipe", "EMATeacher", "EMATeacherTrainer", "EMATrainingArguments", "add_lora", "ema_tau"]
