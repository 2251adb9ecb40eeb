"""Multi-source classification (`source [SEP] English translation`): `recipe.py` (data, labels, classifier),
`translation.py` (translators and their cache), `sweep.py` (one fine-tuning per setting and seed), `report.py`
(table 2 and its plot)."""

from .recipe import MultiSourceRecipe
from .report import combine, middle_mean, results_table, table_markdown
from .sweep import SETTINGS, MultiSourceSweep

__all__ = ["SETTINGS", "MultiSourceRecipe", "MultiSourceSweep", "combine", "middle_mean", "results_table",
           "table_markdown"]
