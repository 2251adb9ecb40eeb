"""Run configuration as data: a YAML file that names its `recipe` and holds that recipe's sections.

Every recipe has `data`, `training` (fields of the recipe's `TrainingArguments` class) and an optional `evaluation`
(a suite run during training); a recipe adds the sections it needs (EMS: `model`, `tokenizer`). Configs shipped with
the package (`trainers/configs/`) are found by name: `--config ems_default`, `--config configs/ems_default.yaml` and
a path to any YAML file all work, from a clone or from an installed wheel.

This module reads and checks configs against the sections a recipe declares; it knows no recipe (the registry that
turns `recipe:` into a class is `trainers.recipes`).
"""

import os
import re
import sys
from collections.abc import Iterable
from dataclasses import InitVar, dataclass, field
from difflib import get_close_matches
from importlib import import_module
from importlib.resources import files
from pathlib import Path

import yaml


class ConfigLoader(yaml.SafeLoader):
    """YAML's safe loader that also reads `1e-4`, `2E5` as floats: YAML 1.1 wants a dot (`1.0e-4`) and reads the
    rest as strings, which `TrainingArguments` would then refuse with an obscure type error."""


ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)[eE][-+]?[0-9]+$"), list("-+0123456789.")
)


def read_yaml(text: str):
    """Parse config or suite YAML (`ConfigLoader`)."""
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml_file(path: Path):
    """`read_yaml` of a file; a syntax error names the file, line and column."""
    try:
        return read_yaml(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = "; ".join(str(part) for part in (error.context, error.problem) if part)
        raise ValueError(f"{path}{where} is not valid YAML: {what}.") from None
    except yaml.YAMLError as error:
        raise ValueError(f"{path} is not valid YAML: {error}") from None

SHIPPED_CONFIGS = Path(str(files("trainers") / "configs"))


def import_from_config(spec: str, setting: str):
    """The object a config names by import path, `module:name` (`recipe: my_module:MyRecipe`, `translation.function:
    my_module:translate`): config that names code is code, run when the config is read. The module is looked for in
    the working directory first, then on the Python path, whichever way the command was started."""
    module_name, sep, name = str(spec).partition(":")
    if not sep or not module_name or not name:
        raise ValueError(f"{setting}={spec!r} is not of the form module:name, e.g. my_package.my_module:my_object.")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = import_module(module_name)
    except ImportError as error:
        raise ValueError(f"{setting}={spec!r}: its module {module_name!r} cannot be imported ({error}); put it in the "
                         f"working directory ({cwd}) or on PYTHONPATH.") from None
    finally:
        if added:
            sys.path.remove(cwd)
    if not hasattr(module, name):
        raise ValueError(f"{setting}={spec!r}: {module_name} ({module.__file__}) has no {name!r}.")
    return getattr(module, name)


def check_known_settings(settings: Iterable[str], known: Iterable[str], where: str) -> None:
    """Refuse a setting that is not in `known`, naming it, the closest known name and where it was set: a typo must
    not leave a default in place silently."""
    known = sorted(set(known))
    for name in settings:
        if name not in known:
            close = get_close_matches(name, known, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"{where}: unknown setting {name!r}; {hint}known settings: {', '.join(known)}.")


def shipped_configs(kind: str | None = None) -> list[str]:
    """The names of the shipped YAML files: `kind="run"` the training configs (they name a `recipe`), `"suite"` the
    evaluation suites (the others), None both."""
    names = []
    for path in sorted(SHIPPED_CONFIGS.glob("*.yaml")):
        is_run = "recipe" in (read_yaml_file(path) or {})
        if kind is None or (kind == "run") == is_run:
            names.append(path.stem)
    return names


def find_config(value: str | Path) -> Path:
    """An existing YAML path, else the shipped config of that name (`ems_default`, `ems_default.yaml`,
    `configs/ems_default.yaml`)."""
    path = Path(value)
    if path.is_file():
        return path
    shipped = SHIPPED_CONFIGS / f"{path.name.removesuffix('.yaml')}.yaml"
    if path.parent in (Path("."), Path("configs")) and shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"Config file {str(value)!r} does not exist, and the package ships no config of that name; shipped: "
        f"{', '.join(shipped_configs())}."
    )


@dataclass
class DataSettings:
    train: str | None = None  # file, folder or Hub name (shipped data by its name, e.g. default/train.jsonl.gz)
    heldout: str | None = None  # in-domain held-out pairs (e.g. default/heldout.jsonl.gz)
    out_of_domain: str | None = None  # held-out pairs from another domain (e.g. debian)
    max_train_pairs: int | None = None
    on_training_overlap: str = "remove"  # held-out pairs with a text seen in training: "remove" (and say so), "error"
    # read data.train as a stream (datasets.IterableDataset) as training consumes it: for corpora that do not fit on
    # a node's disk; needs training.max_steps, and batches in the stream's order through a shuffle buffer
    streaming: bool = False
    shuffle_buffer: int = 10_000  # pairs a stream is shuffled within (IterableDataset.shuffle's buffer_size)
    num_proc: int | None = None  # processes that tokenize the pairs once (Dataset.map's num_proc); None: this one

    def __post_init__(self):
        if self.num_proc is not None and (isinstance(self.num_proc, bool) or not isinstance(self.num_proc, int)
                                          or self.num_proc < 1):
            raise ValueError(f"data.num_proc={self.num_proc!r}: use a number of processes >= 1, or null for one.")
        if not isinstance(self.streaming, bool):
            raise ValueError(f"data.streaming={self.streaming!r}: use true or false.")
        if isinstance(self.shuffle_buffer, bool) or not isinstance(self.shuffle_buffer, int) or self.shuffle_buffer < 1:
            raise ValueError(f"data.shuffle_buffer={self.shuffle_buffer!r}: use a number of pairs >= 1 (1: the "
                             "stream's own order).")
        if self.max_train_pairs is not None and (isinstance(self.max_train_pairs, bool)
                                                 or not isinstance(self.max_train_pairs, int)
                                                 or self.max_train_pairs < 1):
            raise ValueError(f"data.max_train_pairs={self.max_train_pairs!r}: use a number of pairs >= 1, or null for "
                             "all of them.")
        if self.on_training_overlap not in ("remove", "error"):
            raise ValueError(f"data.on_training_overlap={self.on_training_overlap!r}: use 'remove' or 'error'.")


@dataclass
class EvaluationSettings:
    """The `evaluation` section: a suite run during training through `Trainer.evaluate`, as often as the training
    section's `eval_strategy` / `eval_steps` say (its metrics are logged as `eval_*` and may select the best
    checkpoint: `training.metric_for_best_model`)."""

    suite: str | None = None  # an evaluation suite (YAML) to run during training; None: none
    eval_steps: InitVar[int | None] = None  # moved to the training section; refused with the fix

    def __post_init__(self, eval_steps):
        if eval_steps is not None:
            raise ValueError(f"evaluation.eval_steps={eval_steps}: how often to evaluate is set in the training "
                             f"section, as for any Trainer: training.eval_strategy: steps and training.eval_steps: "
                             f"{eval_steps}.")


@dataclass
class RunConfig:
    """A parsed config: `recipe`, `data`, `training`, `evaluation`, and the recipe's own `sections`."""

    recipe: str
    data: DataSettings = field(default_factory=DataSettings)
    training: dict = field(default_factory=dict)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    sections: dict = field(default_factory=dict)
    source: str = ""
    overrides: tuple[str, ...] = ()  # the `--set` overrides applied to the file (already in the values above)

    def __getattr__(self, name):  # run_config.model, run_config.tokenizer: the recipe's sections
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        raise AttributeError(f"{type(self).__name__} has no section {name!r}")

    def to_dict(self) -> dict:
        own = {name: vars(value).copy() if hasattr(value, "__dataclass_fields__") else dict(value)
               for name, value in self.sections.items()}
        return {"recipe": self.recipe, **own, "data": vars(self.data).copy(), "training": dict(self.training),
                "evaluation": vars(self.evaluation).copy()}


def apply_override(raw: dict, override: str) -> None:
    """Apply `section.key=value` (value parsed as YAML) to a raw config dict."""
    key, sep, value = override.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or not section or not name:
        raise ValueError(f"Override {override!r} is not of the form SECTION.KEY=VALUE, e.g. training.max_steps=100.")
    current = raw.setdefault(section, {})
    if not isinstance(current, dict):
        raise ValueError(f"Override {override!r}: section {section!r} is {current!r}, not a mapping.")
    current[name] = read_yaml(value)


def read_raw_config(path: str | Path, overrides: list[str] = ()) -> tuple[Path, dict]:
    """The config file found by `find_config` and its sections as a dict, with the `--set` overrides applied."""
    path = find_config(path)
    raw = read_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a mapping of sections, got {type(raw).__name__}.")
    for override in overrides:
        apply_override(raw, override)
    return path, raw


def build_run_config(path: Path, raw: dict, recipe_name: str, sections: dict[str, type], example_config: str,
                     overrides: list[str] = ()) -> RunConfig:
    """A `RunConfig` from the raw sections of `path` (without `recipe`), checked against the `sections` the recipe
    declares (name -> settings type) beside the common `data`, `training` and `evaluation`."""
    known = {"data", "training", "evaluation", *sections}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path}: unknown sections {unknown}; recipe {recipe_name!r} takes {sorted(known)}.")
    missing = sorted(name for name in sections if name not in raw)
    if missing:
        raise ValueError(f"{path}: recipe {recipe_name!r} needs the sections {missing}; see the config "
                         f"{example_config!r} for an example.")
    for name, value in raw.items():
        if value is not None and not isinstance(value, dict):
            raise ValueError(f"{path}: section {name!r} must be a mapping of settings, got {value!r}.")
    try:
        return RunConfig(
            recipe=recipe_name,
            data=DataSettings(**(raw.get("data") or {})),
            training=dict(raw.get("training") or {}),
            evaluation=EvaluationSettings(**(raw.get("evaluation") or {})),
            sections={name: settings(**(raw.get(name) or {})) for name, settings in sections.items()},
            source=f"configs/{path.name}" if path.parent == SHIPPED_CONFIGS else str(path),
            overrides=tuple(overrides),
        )
    except TypeError as error:
        raise ValueError(f"{path}: {error}") from None
