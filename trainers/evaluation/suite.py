"""Evaluation suites as data: build the papers' evaluators from a YAML task list and run them on any encoder.

A suite is checked whole before anything runs (a missing file, an unknown task type or setting, a bad value raise,
naming the task); then each evaluator runs isolated: one that fails is reported in the results with its reason and
the others still run, and the results can be saved after each evaluator. During training, a suite runs through
`Trainer.evaluate` (`trainers.evaluation.training.SuiteEvaluationMixin`).
"""

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from tqdm.auto import tqdm

from ..config import find_config, read_yaml_file
from ..data import data_file, load_parallel_dataset
from .classification import ZeroShotClassificationEvaluator
from .common import EmbedFn
from .eigen import EigenSimilarityEvaluator
from .mining import BitextMiningEvaluator
from .quantization import check_reduction, reduced
from .retrieval import RetrievalEvaluator
from .similarity import SimilarityEvaluator, read_tsv

logger = logging.getLogger(__name__)


def _pairs_by_language(task: dict) -> tuple[str, dict[str, tuple[list[str], list[str]]]]:
    """The source's name and `{language: (english, translations)}` from a multi-parallel dev folder (`pairs_dir` of
    `LANG.tsv` files with columns `en, text`) or a parallel-pairs file (`pairs_file`, any format
    `load_parallel_dataset` reads, English on the source side, e.g. the shipped `default/heldout.jsonl.gz`)."""
    limit = task.get("limit")
    if "pairs_file" in task:
        source = data_file(task["pairs_file"])
        grouped = {}
        for row in load_parallel_dataset(source):
            if row["src_lang"] == "en":
                english, translations = grouped.setdefault(row["tgt_lang"], ([], []))
                english.append(row["src"])
                translations.append(row["tgt"])
        return str(source), {code: (english[:limit], translations[:limit])
                             for code, (english, translations) in grouped.items()}
    source = data_file(task["pairs_dir"])
    tables = {path.stem: read_tsv(path, ("en", "text"), limit=limit) for path in sorted(source.glob("*.tsv"))}
    return str(source), {code: (table["en"], table["text"]) for code, table in tables.items()}


def _chosen_pairs(
    name: str, task: dict, languages: list[str] | None
) -> tuple[dict[str, tuple[list[str], list[str]]], str | None]:
    """`{language: (english, translations)}` of the languages a task chooses from its pairs (see
    `_pairs_by_language`), in code order, and the `note` its evaluators report (None when there is nothing to say).

    `languages` is `all` (the default), `model` or a list of codes; English is never paired with itself. `languages:
    model` takes the model's languages; a model that names none (a baseline such as all-MiniLM-L6-v2) is evaluated
    on every language of the data, which the note says."""
    if ("pairs_file" in task) == ("pairs_dir" in task):
        raise ValueError("set exactly one of pairs_file (a parallel-pairs file) and pairs_dir (a folder of LANG.tsv "
                         "files).")
    source, grouped = _pairs_by_language(task)
    available = sorted(grouped)
    wanted, note = task.get("languages", "all"), None
    if wanted == "model" and languages is None:
        wanted = "all"
        note = f"languages: model, but the model names no languages: evaluated on every language of {source}"
        logger.warning("Task %r: %s.", name, note)
    chosen = available if wanted == "all" else languages if wanted == "model" else list(wanted)
    chosen = [code for code in chosen if code != "en"]
    missing = sorted(set(chosen) - set(available))
    if wanted not in ("all", "model") and missing:
        raise ValueError(f"{source} has no pairs for {missing}; available: {available}.")
    pairs = {code: grouped[code] for code in sorted(set(chosen) & set(available))}
    if not pairs:
        raise ValueError(f"none of the languages {chosen} has pairs in {source} (it has {available}).")
    return pairs, note


# The settings `_chosen_pairs` reads, shared by the task types built on it.
_PAIRS_SETTINGS = ("pairs_file", "pairs_dir", "languages", "limit")
# Options of `RetrievalEvaluator` a retrieval task may set, and the option each needs to have any effect.
_RETRIEVAL_OPTIONS = {"precision_at": None, "num_distractors": "precision_at", "seed": "precision_at",
                      "margin": "precision_at", "k": "margin"}


def _retrieval(name: str, task: dict, languages: list[str] | None) -> list:
    """One `RetrievalEvaluator` per language the task chooses (see `_chosen_pairs`): English sources, translated
    targets."""
    for option, needs in _RETRIEVAL_OPTIONS.items():
        if option in task and needs is not None and not task.get(needs):
            raise ValueError(f"{option}={task[option]!r} has no effect without {needs}; set {needs} too "
                             f"(e.g. precision_at: [1, 5, 10], margin: true) or drop {option}.")
    pairs, note = _chosen_pairs(name, task, languages)
    options = {option: task[option] for option in _RETRIEVAL_OPTIONS if option in task}
    return [RetrievalEvaluator(english, translations, name=f"{name}_en-{code}", note=note, **options)
            for code, (english, translations) in pairs.items()]


# Options of `EigenSimilarityEvaluator` an eigen task may set.
_EIGEN_OPTIONS = ("sample_size", "num_samples", "seed")


def _eigen(name: str, task: dict, languages: list[str] | None) -> list:
    """One `EigenSimilarityEvaluator` per language the task chooses (see `_chosen_pairs`): the English side's
    embedding space against the translation side's (multi-task paper sec. 5, eq. 3; lower is more similar)."""
    pairs, note = _chosen_pairs(name, task, languages)
    options = {option: task[option] for option in _EIGEN_OPTIONS if option in task}
    return [EigenSimilarityEvaluator(english, translations, name=f"{name}_en-{code}", note=note, **options)
            for code, (english, translations) in pairs.items()]


def _similarity(name: str, task: dict, languages: list[str] | None) -> list:
    return [SimilarityEvaluator.from_tsv(data_file(task["path"]), name=name, limit=task.get("limit"))]


def _classification(name: str, task: dict, languages: list[str] | None) -> list:
    options = {key: task[key] for key in ("num_labels", "metric", "seeds", "limit") if key in task}
    if "seeds" in options:
        options["seeds"] = tuple(options["seeds"])
    test_dirs = {language: data_file(folder) for language, folder in task["test_dirs"].items()}
    return [ZeroShotClassificationEvaluator.from_tsv_dirs(data_file(task["train_dir"]), test_dirs, name=name,
                                                          **options)]


def _mining(name: str, task: dict, languages: list[str] | None) -> list:
    """Mine translations of `sources_file` (`en, text` pairs) hidden among the pool of the other texts."""
    table = read_tsv(data_file(task["pairs_file"]), ("en", "text"), limit=task.get("limit"))
    paired = int(len(table["en"]) * task.get("paired_fraction", 0.5))
    middle = (len(table["en"]) + paired) // 2  # sources keep en[paired:middle], targets text[middle:]: no gold
    sources = table["en"][:paired] + table["en"][paired:middle]
    targets = table["text"][:paired] + table["text"][middle:]
    return [BitextMiningEvaluator(sources, targets, [(i, i) for i in range(paired)], name=name)]


# Settings every task takes: its embeddings truncated to the leading `truncate_dim` dimensions and quantized to
# `precision` (sentence-transformers' quantize_embeddings; binary scored by Hamming distance) before scoring.
_REDUCTION_SETTINGS = ("truncate_dim", "precision")

_BUILDERS = {"retrieval": _retrieval, "similarity": _similarity, "classification": _classification,
             "mining": _mining, "eigen": _eigen}
TASK_TYPES = tuple(_BUILDERS)
# The settings each task type takes besides `type`; any other is a typo and stops the suite.
TASK_SETTINGS = {
    "retrieval": (*_PAIRS_SETTINGS, *_RETRIEVAL_OPTIONS),
    "similarity": ("path", "limit"),
    "classification": ("train_dir", "test_dirs", "num_labels", "metric", "seeds", "limit"),
    "mining": ("pairs_file", "limit", "paired_fraction"),
    "eigen": (*_PAIRS_SETTINGS, *_EIGEN_OPTIONS),
}


def load_suite(path: str | Path, languages: list[str] | None = None) -> list:
    """Evaluators of a YAML file `{tasks: {NAME: {type: ..., ...}}}`, in task order; each carries `suite_task`, the
    name of the task it belongs to. `languages` (the model's; None when it names none) fills `languages: model`.

    Everything a task names is checked here, before anything runs: a missing file, an unknown type or setting, a
    missing setting or a bad value raises with the suite, the task and the fix."""
    path = find_config(path)
    tasks = (read_yaml_file(path) or {}).get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{path} has no `tasks:` mapping of task names to settings.")
    evaluators = []
    for name, task in tasks.items():
        if not isinstance(task, dict):
            raise ValueError(f"{path}: task {name!r} is {task!r}; write its settings as a mapping with a `type`.")
        kind = task.get("type")
        if kind not in _BUILDERS:
            raise ValueError(f"{path}: task {name!r} has type {kind!r}; use one of {TASK_TYPES}.")
        unknown = sorted(set(task) - {"type", *TASK_SETTINGS[kind], *_REDUCTION_SETTINGS})
        if unknown:
            raise ValueError(f"{path}: task {name!r} ({kind}) has unknown settings {unknown}; {kind} tasks take "
                             f"{list(TASK_SETTINGS[kind])}.")
        reduction = {key: task[key] for key in _REDUCTION_SETTINGS if key in task}
        try:
            check_reduction(reduction.get("truncate_dim"), reduction.get("precision", "float32"))
            built = _BUILDERS[kind](name, task, languages)
        except KeyError as error:
            raise ValueError(f"{path}: task {name!r} ({kind}) needs the setting {error}.") from None
        except FileNotFoundError as error:
            raise FileNotFoundError(f"{path}: task {name!r} ({kind}): {error}") from None
        except (ValueError, TypeError) as error:
            raise ValueError(f"{path}: task {name!r} ({kind}): {error}") from None
        for evaluator in built:
            evaluator.suite_task = name
            evaluator.reduction = reduction
        evaluators += built
    return evaluators


EVALUATOR_TASKS = {RetrievalEvaluator: "retrieval", SimilarityEvaluator: "similarity",
                   ZeroShotClassificationEvaluator: "classification", BitextMiningEvaluator: "mining",
                   EigenSimilarityEvaluator: "eigen"}


def result_entry(evaluator) -> dict:
    """What a `run_suite` entry says of its evaluator besides the outcome: its task type, the suite task it belongs
    to and its note, where it has one."""
    entry = {"task": EVALUATOR_TASKS.get(type(evaluator), "other"),
             "suite_task": getattr(evaluator, "suite_task", evaluator.name)}
    if getattr(evaluator, "note", None):
        entry["note"] = evaluator.note
    return entry


def run_one(evaluator, embed: EmbedFn) -> dict:
    """`{"metrics": ...}` of one evaluator, or `{"error": "Type: message"}` when it raises or measures a
    non-finite value."""
    try:
        prefix = f"{evaluator.name}_"
        embed = reduced(embed, **getattr(evaluator, "reduction", {}))  # the task's truncate_dim / precision
        metrics = {key.removeprefix(prefix): float(value) for key, value in evaluator(embed).items()}
        bad = {key: value for key, value in metrics.items() if not math.isfinite(value)}
        if bad:
            raise ValueError(f"non-finite results {bad}; check the encoder's output and the task's data.")
        return {"metrics": metrics}
    except Exception as error:  # one task's failure is reported in its entry; the other tasks still run
        logger.warning("Evaluator %r failed: %s: %s", evaluator.name, type(error).__name__, error)
        return {"error": f"{type(error).__name__}: {error}"}


def _write_json(path: Path, content: dict) -> None:
    """Write `content` to `path` through a temporary file and a rename, so that a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(json.dumps(content, indent=2))
    os.replace(partial, path)


def run_suite(
    evaluators: list, embed: EmbedFn, output: str | Path | None = None, metadata: Mapping | None = None
) -> dict[str, dict]:
    """Run every evaluator with `embed`: `{evaluator name: {"task": type, "suite_task": task name, "metrics":
    {metric: value}}}`, plus `"note"` where the evaluator has one (e.g. languages taken from the data).

    Each evaluator runs isolated: one that raises, or measures NaN, is reported as `{"task", "suite_task",
    "error": "Type: message"}` and the others still run. With `output`, the JSON `{**metadata, "results": ...,
    "pending": [evaluators not run yet]}` is rewritten after each evaluator, so a run stopped midway keeps what it
    measured and says what it did not.
    """
    output = None if output is None else Path(output)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
    results = {}
    for index, evaluator in enumerate(tqdm(evaluators, desc="evaluating")):
        results[evaluator.name] = {**result_entry(evaluator), **run_one(evaluator, embed)}
        if output is not None:
            pending = [later.name for later in evaluators[index + 1:]]
            _write_json(output, {**(metadata or {}), "results": results, "pending": pending})
    return results


def failed_evaluators(results: dict[str, dict]) -> dict[str, str]:
    """`{evaluator: "Type: message"}` of the evaluators of `run_suite` results that failed."""
    return {name: entry["error"] for name, entry in results.items() if "error" in entry}


def flat_metrics(results: dict[str, dict]) -> dict[str, float]:
    """`{evaluator_metric: value}` of the evaluators that succeeded, plus `{task}_average_{metric}` for each suite
    task of several evaluators (a retrieval task's languages) that all succeeded: the mean of the metrics they
    share, e.g. `dev_average_p@1`, one number to select a checkpoint by."""
    flat = {f"{name}_{key}": value
            for name, entry in results.items() for key, value in entry.get("metrics", {}).items()}
    groups = {}
    for name, entry in results.items():
        groups.setdefault(entry.get("suite_task", name), []).append(entry)
    for task, entries in groups.items():
        if len(entries) < 2 or any("metrics" not in entry for entry in entries):
            continue
        shared = [key for key in entries[0]["metrics"] if all(key in entry["metrics"] for entry in entries)]
        for key in shared:
            flat[f"{task}_average_{key}"] = sum(entry["metrics"][key] for entry in entries) / len(entries)
    return flat
