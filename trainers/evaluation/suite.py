"""Evaluation suites as data: build the papers' evaluators from a YAML task list, run them on any encoder, and run
them during training as a Trainer callback."""

from pathlib import Path

import yaml
from tqdm.auto import tqdm
from transformers import TrainerCallback

from ..config import find_config
from ..data import data_file, load_parallel_dataset
from ..encoding import encode
from .classification import ZeroShotClassificationEvaluator
from .common import EmbedFn
from .mining import BitextMiningEvaluator
from .retrieval import RetrievalEvaluator
from .similarity import SimilarityEvaluator, read_tsv


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


def _retrieval(name: str, task: dict, languages: list[str] | None) -> list:
    """One evaluator per language of a multi-parallel dev folder or a pairs file (see `_pairs_by_language`)."""
    source, grouped = _pairs_by_language(task)
    available = sorted(grouped)
    wanted = task.get("languages", "all")
    chosen = available if wanted == "all" else (languages or []) if wanted == "model" else list(wanted)
    chosen = [code for code in chosen if code != "en"]
    missing = sorted(set(chosen) - set(available))
    if wanted not in ("all", "model") and missing:
        raise ValueError(f"task {name!r}: {source} has no pairs for {missing}; available: {available}.")
    evaluators = [
        RetrievalEvaluator(*grouped[code], name=f"{name}_en-{code}", precision_at=task.get("precision_at"),
                           margin=task.get("margin", False))
        for code in sorted(set(chosen) & set(available))
    ]
    if not evaluators:
        raise ValueError(f"task {name!r}: none of the languages {chosen} has pairs in {source}.")
    return evaluators


def _similarity(name: str, task: dict, languages: list[str] | None) -> list:
    return [SimilarityEvaluator.from_tsv(task["path"], name=name, limit=task.get("limit"))]


def _classification(name: str, task: dict, languages: list[str] | None) -> list:
    options = {key: task[key] for key in ("num_labels", "metric", "seeds", "limit") if key in task}
    if "seeds" in options:
        options["seeds"] = tuple(options["seeds"])
    return [ZeroShotClassificationEvaluator.from_tsv_dirs(task["train_dir"], task["test_dirs"], name=name, **options)]


def _mining(name: str, task: dict, languages: list[str] | None) -> list:
    """Mine translations of `sources_file` (`en, text` pairs) hidden among the pool of the other texts."""
    table = read_tsv(data_file(task["pairs_file"]), ("en", "text"), limit=task.get("limit"))
    paired = int(len(table["en"]) * task.get("paired_fraction", 0.5))
    middle = (len(table["en"]) + paired) // 2  # sources keep en[paired:middle], targets text[middle:]: no gold
    sources = table["en"][:paired] + table["en"][paired:middle]
    targets = table["text"][:paired] + table["text"][middle:]
    return [BitextMiningEvaluator(sources, targets, [(i, i) for i in range(paired)], name=name)]


_BUILDERS = {"retrieval": _retrieval, "similarity": _similarity, "classification": _classification,
             "mining": _mining}
TASK_TYPES = tuple(_BUILDERS)


def load_suite(path: str | Path, languages: list[str] | None = None) -> list:
    """Evaluators of a YAML file `{tasks: {NAME: {type: ..., ...}}}`; `languages` fills `languages: model`."""
    path = find_config(path)
    tasks = (yaml.safe_load(path.read_text()) or {}).get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise ValueError(f"{path} has no `tasks:` mapping of task names to settings.")
    evaluators = []
    for name, task in tasks.items():
        kind = (task or {}).get("type")
        if kind not in _BUILDERS:
            raise ValueError(f"{path}: task {name!r} has type {kind!r}; use one of {TASK_TYPES}.")
        try:
            evaluators += _BUILDERS[kind](name, task, languages)
        except KeyError as error:
            raise ValueError(f"{path}: task {name!r} ({kind}) needs the setting {error}.") from None
    return evaluators


_TASK_OF = {RetrievalEvaluator: "retrieval", SimilarityEvaluator: "similarity",
            ZeroShotClassificationEvaluator: "classification", BitextMiningEvaluator: "mining"}


def run_suite(evaluators: list, embed: EmbedFn) -> dict[str, dict]:
    """Run every evaluator with `embed`: `{evaluator name: {"task": type, "metrics": {metric: value}}}`."""
    results = {}
    for evaluator in tqdm(evaluators, desc="evaluating"):
        prefix = f"{evaluator.name}_"
        metrics = {key.removeprefix(prefix): value for key, value in evaluator(embed).items()}
        results[evaluator.name] = {"task": _TASK_OF.get(type(evaluator), "other"), "metrics": metrics}
    return results


def flat_metrics(results: dict[str, dict]) -> dict[str, float]:
    return {f"{name}_{key}": value for name, entry in results.items() for key, value in entry["metrics"].items()}


class EvaluatorCallback(TrainerCallback):
    """Run evaluators every `eval_steps` training steps (and at the end) on the model being trained; the results
    go into the Trainer's log (`state.log_history`, saved in `trainer_state.json`) under `eval_` names."""

    def __init__(self, evaluators: list, tokenizer, eval_steps: int, batch_size: int = 128):
        if eval_steps < 1:
            raise ValueError(f"eval_steps={eval_steps}: run the evaluators every N >= 1 steps.")
        self.evaluators, self.tokenizer, self.eval_steps, self.batch_size = evaluators, tokenizer, eval_steps, batch_size

    def _evaluate(self, state, model):
        embed = lambda texts: encode(model, self.tokenizer, texts, batch_size=self.batch_size)  # noqa: E731
        metrics = {f"eval_{key}": value for key, value in flat_metrics(run_suite(self.evaluators, embed)).items()}
        state.log_history.append({**metrics, "step": state.global_step})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and (state.global_step % self.eval_steps == 0
                                            or state.global_step == state.max_steps):
            self._evaluate(state, model)
