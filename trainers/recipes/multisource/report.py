"""The multi-source report: the figure of each setting (the mean of the middle three of five seeds) in the paper's
table 2 layout, as JSON, markdown and a plot, for one run or several (`combine`)."""

import json
from pathlib import Path

from .sweep import SETTINGS

SETTING_TITLES = {"A": "A. Source", "B": "B. English", "A+B": "A+B (Proposed)"}
RESULTS_FILE, TABLE_FILE, PLOT_FILE = "multisource_results.json", "multisource_table.md", "multisource_plot.png"


def middle_mean(values) -> float:
    """Mean of the values without the best and the worst one (the paper's figure: the mean of the middle three of
    five seeds, sec. 4.1.2); with fewer than three values, nothing can be dropped and it is the plain mean."""
    values = sorted(float(value) for value in values)
    if not values:
        raise ValueError("middle_mean needs at least one value.")
    kept = values[1:-1] if len(values) >= 3 else values
    return sum(kept) / len(kept)


def results_table(runs: list[dict], settings: list[str], metric: str, classifier: str) -> dict:
    """The paper's table 2 entry of one classifier: per setting the middle-three mean of the test scores and the
    per-seed scores it comes from."""
    table = {"metric": metric, "classifier": classifier, "settings": {}}
    for setting in settings:
        chosen = [run for run in runs if run["setting"] == setting]
        scores = [run["test"] for run in chosen]
        table["settings"][setting] = {
            "score": middle_mean(scores), "seeds": [run["seed"] for run in chosen], "test": scores,
            "validation": [run["validation"] for run in chosen], "trimmed": len(scores) >= 3,
        }
    return table


def table_markdown(tables: list[dict], names: list[str] | None = None) -> str:
    """Table 2 of the paper: one row per classifier (and data set), one column per setting, the best in bold."""
    settings = list(SETTINGS)
    header = "| model | metric | " + " | ".join(SETTING_TITLES[s] for s in settings) + " |"
    lines = [header, "|---|---|" + "---:|" * len(settings)]
    for position, table in enumerate(tables):
        scores = {s: entry["score"] for s, entry in table["settings"].items()}
        best = max(scores.values())
        cells = [("**%.3f**" if scores[s] == best else "%.3f") % scores[s] if s in scores else "-" for s in settings]
        name = names[position] if names else table["classifier"]
        lines.append(f"| {name} | {table['metric']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_tables(tables: list[dict], path: str | Path, names: list[str] | None = None) -> Path:
    """Bars of each setting's reported score with every seed's score as a dot, one panel per table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(tables), figsize=(3.6 * len(tables), 3.4), squeeze=False)
    for axis, position in zip(axes[0], range(len(tables))):
        table = tables[position]
        settings = list(table["settings"])
        scores = [table["settings"][s]["score"] for s in settings]
        axis.bar(range(len(settings)), scores, color=["#8da0cb", "#66c2a5", "#fc8d62"][:len(settings)])
        for x, setting in enumerate(settings):
            seeds = table["settings"][setting]["test"]
            axis.scatter([x] * len(seeds), seeds, color="black", s=10, zorder=3)
        axis.set_xticks(range(len(settings)), [SETTING_TITLES[s] for s in settings], fontsize=8)
        axis.set_ylabel(table["metric"])
        low = min(min(table["settings"][s]["test"]) for s in settings)
        axis.set_ylim(max(0.0, low - 0.1), min(1.0, max(scores) + 0.08) if max(scores) <= 1 else None)
        axis.set_title(names[position] if names else Path(table["classifier"]).name, fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)


def combine(folders: list[str], output_prefix: str, names: list[str] | None = None) -> str:
    """One table 2 (markdown, `<prefix>.md`) and one plot (`<prefix>.png`) of several runs' output folders."""
    tables = [json.loads((Path(folder) / RESULTS_FILE).read_text()) for folder in folders]
    names = names or [Path(folder).name for folder in folders]
    text = table_markdown(tables, names)
    Path(f"{output_prefix}.md").write_text(text)
    plot_tables(tables, f"{output_prefix}.png", names)
    return text

