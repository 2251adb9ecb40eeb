"""Model cards rendered from `hub_cards/` templates with measured results in their `model-index`."""

import os
import platform
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import jinja2
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from hub_cards import template

from .data.languages import language_code_problem
from .data.sources import DATA_SOURCES
from .files import write_text_atomic

# The distributions whose versions every card states (sentence-transformers cards' "Framework Versions"): the package
# itself, then what it trains and evaluates with; one that is not installed is left out.
CARD_LIBRARIES = ("ems-sentence-embeddings", "torch", "transformers", "sentence-transformers", "datasets",
                  "accelerate", "peft", "tokenizers", "huggingface_hub")


def retrieval_eval_results(results: dict, dataset_name: str, dataset_type: str,
                           dataset_split: str) -> list[EvalResult]:
    """One `model-index` entry per language pair and one for the average, metric `p@1` in percent. `dataset_type` is
    the data's id (`trainers.data.sources.dataset_type`); the Hub groups entries by type, config (the pair) and
    split, so two evaluation sets of one source stay apart by their `dataset_split`."""
    entries = []
    for name, row in results.items():
        entries.append(
            EvalResult(
                task_type="sentence-similarity",
                task_name="Translation retrieval",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=name,
                dataset_split=dataset_split,
                metric_type="precision_at_1",
                metric_name=f"P@1 ({name})",
                metric_value=round(row["p@1"], 4),
            )
        )
    return entries


def retrieval_card_context(results: dict, evaluation_sets: dict[str, dict]) -> dict:
    """Card context of held-out retrieval results, for any recipe that trains on parallel pairs.

    `results[set]` is `{"model": ..., "tfidf_baseline": ...}` from `retrieval_by_language` for each evaluation set;
    `evaluation_sets[set]` names it: `title`, `dataset_name`, `dataset_type` (the split is the set's name). Returns
    `retrieval_sections` (a table row per language pair beside the baseline, the averages, and where the model wins
    and loses) and `eval_results` (`model-index` entries of every set)."""
    sections, entries = [], []
    for name, described in evaluation_sets.items():
        model, baseline = results[name]["model"], results[name]["tfidf_baseline"]
        rows = [(pair, {"model": model[pair]["p@1"], "baseline": baseline[pair]["p@1"], "size": model[pair]["size"]})
                for pair in model if pair != "average"]
        wins = sum(row["model"] > row["baseline"] for _, row in rows)
        losses = [pair for pair, row in rows if row["model"] <= row["baseline"]]
        sections.append({**described, "rows": rows, "wins": wins, "losses": losses,
                         "average": {"model": model["average"]["p@1"], "baseline": baseline["average"]["p@1"]}})
        entries += retrieval_eval_results(model, described["dataset_name"], described["dataset_type"], name)
    return {"retrieval_sections": sections, "eval_results": entries}


def sentence_encoder_card_data(folder: str | Path) -> dict:
    """`library_name`, `pipeline_tag` and `tags` of a sentence encoder's card: a folder with `modules.json` loads in
    sentence-transformers (the Hub then shows it as such), any other one in transformers."""
    if (Path(folder) / "modules.json").is_file():
        return {"library_name": "sentence-transformers", "pipeline_tag": "sentence-similarity",
                "tags": ["sentence-transformers", "sentence-similarity", "feature-extraction", "transformers"]}
    return {"library_name": "transformers", "pipeline_tag": "feature-extraction", "tags": ["feature-extraction"]}


def similarity_widget(pairs, languages: list[str], examples: int = 3, candidates: int = 3) -> list[dict]:
    """The Hub widget of a sentence-similarity card, as sentence-transformers cards have it: `examples` entries, each
    the `src` of a pair with `candidates` sentences to rank by similarity to it: its translation first, then the
    translations of the next pairs. Pairs whose target is in one of the card's `languages` (`pt_BR` counts as `pt`)
    are taken one target language at a time in turn (the first pair of each language, then the second, ...), so the
    widget shows as many of them as it can."""
    by_language = {}
    for row in pairs.select_columns(["src", "tgt", "tgt_lang"]):
        if row["tgt_lang"].split("_")[0] in languages:
            by_language.setdefault(row["tgt_lang"], []).append(row)
    needed = examples + candidates - 1
    rows = [by_language[code][turn] for turn in range(needed) for code in sorted(by_language)
            if turn < len(by_language[code])][:needed]
    return [{"source_sentence": rows[index]["src"],
             "sentences": [rows[(index + offset) % len(rows)]["tgt"] for offset in range(min(candidates, len(rows)))]}
            for index in range(min(examples, len(rows)))]


def library_versions() -> dict[str, str]:
    """Python's version and that of each installed distribution of `CARD_LIBRARIES`."""
    versions = {"python": platform.python_version()}
    for name in CARD_LIBRARIES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def provenance_section(card_data: dict) -> str:
    """The sections every card ends with (`hub_cards/_provenance.md`): "Data sources", each dataset id of the card
    (`datasets` and the `model-index` dataset types) that `DATA_SOURCES` knows with its title, address and licence,
    and "Framework versions" (`library_versions`)."""
    ids = [*(card_data.get("datasets") or []), *(entry.dataset_type for entry in card_data.get("eval_results") or [])]
    sources = {source: DATA_SOURCES[source] for source in dict.fromkeys(ids) if source in DATA_SOURCES}
    return render_section(template("_provenance"), sources=sources, versions=library_versions())


def render_section(path: str | Path, **context) -> str:
    """A card section from its template file (e.g. `hub_cards/_encoder_evaluation.md`), as markdown."""
    return jinja2.Template(Path(path).read_text(encoding="utf-8")).render(**context).strip()


# An absolute path of this machine: `/` then two or more segments, not inside a URL (`https://host/...`).
_ABSOLUTE_PATH = re.compile(r"(?<![\w:/.~-])/[\w.+@-]+(?:/[\w.+@=-]+)+/?")


def without_local_paths(text: str, folder: str | Path) -> str:
    """`text` with every absolute path of this machine written relative to `folder` (`/home/me/data/x.tsv` from
    `/home/me/runs/out` is `../../data/x.tsv`): a card or a file that is published says nothing of the author's
    machine."""
    base = Path(folder).resolve()
    return _ABSOLUTE_PATH.sub(lambda match: os.path.relpath(match.group(0), base), text)


def check_card_languages(languages: list[str]) -> None:
    """Refuse a card `language` that is not an ISO 639 code (the Hub files a model under its languages by code)."""
    for code in [languages] if isinstance(languages, str) else languages:
        problem = language_code_problem(code)
        if problem:
            raise ValueError(f"The card's language list {list(languages)} holds {problem}; name the model's languages "
                             "by ISO 639 code (de, ast, pt_BR).")


def render_model_card(output_dir: str | Path, template_path: str | Path, card_data: dict, **context) -> ModelCard:
    """Write `README.md` in `output_dir` from the template at `template_path` (a recipe's, `hub_cards/<recipe>.md`)
    followed by the data sources and library versions (`provenance_section`): `card_data` are `ModelCardData` fields
    (the folder's name is the model name; `datasets`, `base_model`, `widget` where the recipe has them), `context`
    fills the template. Absolute paths come out relative to `output_dir` (`without_local_paths`)."""
    name = Path(output_dir).name
    check_card_languages(card_data.get("language") or [])
    card = ModelCard.from_template(ModelCardData(model_name=name, **card_data), template_path=str(template_path),
                                   model_name=name, repo_id=name, **context)
    text = f"{str(card).rstrip()}\n\n{provenance_section(card_data)}\n"
    card = ModelCard(without_local_paths(text, output_dir))
    write_text_atomic(Path(output_dir) / "README.md", str(card))
    return card


# How each evaluation-suite task shows up in a card's model-index.
_CARD_TASKS = {
    "retrieval": ("sentence-similarity", "Translation retrieval"),
    "mining": ("sentence-similarity", "Bitext mining"),
    "similarity": ("sentence-similarity", "Semantic similarity"),
    "classification": ("text-classification", "Zero-shot cross-lingual classification"),
}


def suite_eval_results(results: dict[str, dict], suite: str) -> list[EvalResult]:
    """`model-index` entries for `run_suite` results (standard deviations stay in the JSON, not the index)."""
    entries = []
    for name, entry in results.items():
        task_type, task_name = _CARD_TASKS.get(entry["task"], ("feature-extraction", entry["task"]))
        for metric, value in entry.get("metrics", {}).items():  # a failed task has an "error" instead
            if metric.endswith("_std"):
                continue
            # model-index groups results by dataset_type (the dataset id), so each task gets its own
            entries.append(EvalResult(task_type=task_type, task_name=task_name, dataset_type=name,
                                      dataset_name=f"{name} ({Path(suite).name})", metric_type=metric,
                                      metric_name=f"{name} {metric}", metric_value=round(float(value), 4)))
    return entries


def update_card_results(folder: str | Path, results: dict[str, dict], suite: str) -> ModelCard:
    """Add suite results to the card in `folder`: `model-index` entries (replacing earlier ones of the same task,
    dataset and metric) and a results table in the text."""
    folder = Path(folder)
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder} holds no model (no config.json or modules.json) to write a card for.")
    path = folder / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard.from_template(
        ModelCardData(model_name=folder.name, **sentence_encoder_card_data(folder)),
        template_str="---\n{{ card_data }}\n---\n\n# {{ model_name }}\n", model_name=folder.name)
    new = suite_eval_results(results, suite)
    replaced = {(r.task_type, r.dataset_name, r.dataset_config, r.metric_type) for r in new}
    kept = [r for r in (card.data.eval_results or [])
            if (r.task_type, r.dataset_name, r.dataset_config, r.metric_type) not in replaced]
    card.data.eval_results = kept + new
    card.data.model_name = card.data.model_name or Path(folder).name
    heading = f"## Evaluation suite `{suite}`"
    rows = "\n".join(f"| {r.dataset_name} | {r.metric_type} | {r.metric_value:.4f} |" for r in new)
    section = (f"{heading}\n\nReproduce: `python scripts/evaluate_model.py --model {folder} --suite {suite} "
               f"--update_card`\n\n| task | metric | value |\n|---|---|---|\n{rows}\n")
    text = replace_card_section(card.text, heading, section)
    card = ModelCard(f"---\n{card.data.to_yaml()}\n---\n{text}")
    card.save(path)
    return card


def _heading_level(line: str) -> int:
    """The level of a markdown ATX heading line (`## x` -> 2), 0 for other lines."""
    hashes = len(line) - len(line.lstrip("#"))
    return hashes if 0 < hashes <= 6 and line[hashes:hashes + 1] == " " else 0


def replace_card_section(text: str, heading: str, section: str, after: str | None = None) -> str:
    """`text` with the markdown section that starts at the line `heading` (up to the next heading of the same or a
    higher level) replaced by `section`; every older copy is removed. Without one, `section` goes at the end of the
    section `after` when the text has it (e.g. `## Evaluation`), else at the end of the text."""
    level = _heading_level(heading)
    kept, skipping, placed = [], False, None
    for line in text.splitlines():
        if line.strip() == heading.strip():
            skipping = True
            placed = len(kept) if placed is None else placed
            continue
        if skipping and 0 < _heading_level(line) <= level:
            skipping = False
        if not skipping:
            kept.append(line)
    if placed is None and after is not None:
        starts = [index for index, line in enumerate(kept) if line.strip() == after.strip()]
        if starts:
            ends = [index for index in range(starts[0] + 1, len(kept))
                    if 0 < _heading_level(kept[index]) <= _heading_level(after)]
            placed = ends[0] if ends else None
    body = section.strip("\n").splitlines() + [""]
    if placed is None:
        while kept and not kept[-1].strip():
            kept.pop()
        kept += [""] + body
    else:
        kept[placed:placed] = body
    return "\n".join(kept).rstrip("\n") + "\n"
