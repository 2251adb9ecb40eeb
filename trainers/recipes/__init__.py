"""Training recipes, one module per method, registered by the name a config's `recipe:` gives."""

from .base import RECIPES, Recipe, get_recipe, register_recipe, run_recipe
from . import ems  # noqa: F401  (registers "ems")

__all__ = ["RECIPES", "Recipe", "get_recipe", "register_recipe", "run_recipe"]
