"""Model-card templates, one per model type (`<model_type>.md`), rendered by `trainers.cards`."""

from importlib.resources import files
from pathlib import Path


def template(model_type: str) -> Path:
    """The card template of a model type, e.g. `hub_cards/ems.md` for `model_type="ems"`."""
    path = Path(str(files(__name__) / f"{model_type}.md"))
    if not path.is_file():
        shipped = sorted(p.stem for p in path.parent.glob("*.md"))
        raise ValueError(f"No model-card template for model_type {model_type!r} in hub_cards/; shipped: {shipped}.")
    return path
