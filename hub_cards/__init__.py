"""Model-card templates, one per recipe (`<recipe>.md`: the name a config's `recipe:` gives), rendered by
`trainers.cards`; a name starting with `_` is a section shared by several templates."""

from importlib.resources import files
from pathlib import Path


def template(recipe: str) -> Path:
    """The card template of a recipe, e.g. `hub_cards/ems.md` for `recipe: ems`."""
    path = Path(str(files(__name__) / f"{recipe}.md"))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.md") if not p.stem.startswith("_"))
        raise ValueError(f"No model-card template for recipe {recipe!r} in hub_cards/ (shipped: {shipped}); give "
                         "the recipe a card_template.")
    return path
