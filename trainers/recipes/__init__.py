"""Training recipes, one module per method, registered by the name a config's `recipe:` gives."""

from .base import RECIPES, Recipe, get_recipe, register_recipe, run_recipe
from . import ems  # noqa: F401  (registers "ems")
from . import ema_alignment  # noqa: F401  (registers "ema_alignment")

__all__ = ["RECIPES", "Recipe", "get_recipe", "register_recipe", "run_recipe"]
