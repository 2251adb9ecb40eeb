"""The EMS method (Mao, Chu & Kurohashi): `recipe.py` (the recipe), `trainer.py` (XTR + contrastive, eq. 12)."""

from .recipe import EMSRecipe
from .trainer import EMSTrainer, EMSTrainingArguments

__all__ = ["EMSRecipe", "EMSTrainer", "EMSTrainingArguments"]
