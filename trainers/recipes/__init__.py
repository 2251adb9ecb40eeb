"""Training recipes, one package per method (`ems/`, `multitask/`, `ema_alignment/`, `multisource/`), on a two-tier
base: `Recipe` (`base.py`: arguments, seed, resume, the run's steps, card, publishing, and the registry) and
`EncoderRecipe` (`encoder.py`: pair data, held-out retrieval in and out of domain beside TF-IDF, the
sentence-transformers files, the encoder card).

A config's `recipe:` names a shipped recipe (its package is imported then) or a recipe of your own by import path,
`my_package.my_module:MyRecipe`. See `docs/adding_a_method.md`.
"""

from .base import (
    RECIPES,
    Recipe,
    get_recipe,
    last_complete_checkpoint,
    load_run_config,
    publish_ignore,
    register_recipe,
    run_recipe,
    shipped_recipes,
    training_arguments,
)
from .encoder import EncoderRecipe, ScratchEncoderRecipe, TokenizerSettings

__all__ = ["RECIPES", "EncoderRecipe", "Recipe", "ScratchEncoderRecipe", "TokenizerSettings", "get_recipe",
           "last_complete_checkpoint", "load_run_config", "publish_ignore", "register_recipe", "run_recipe",
           "shipped_recipes", "training_arguments"]
