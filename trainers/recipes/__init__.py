"""Training recipes, one module per method, registered by the name a config's `recipe:` gives.

Every module of this package is imported here, so a new recipe plugs in by adding its file (with
`@register_recipe` on its `Recipe` subclass): no list of recipes to edit.
"""

from importlib import import_module
from pkgutil import iter_modules

from .base import RECIPES, Recipe, get_recipe, register_recipe, run_recipe

for _module in iter_modules(__path__):
    if _module.name != "base":
        import_module(f"{__name__}.{_module.name}")

__all__ = ["RECIPES", "Recipe", "get_recipe", "register_recipe", "run_recipe"]
