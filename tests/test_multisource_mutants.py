"""Cases for the multi-source scoring (`trainers/recipes/multisource/report.py`, the label functions and
`summary` / `saved_run` of `recipe.py`) and for the QWK metric that the mutation run
(benchmarks/results/mutation_report.md) found missing: whole tables and messages compared exactly, a setting missing
from a table, ties for the best, label sets in the parent folder and malformed ones, labels given by index, the
label list cut at twelve names, and QWK imported directly (so that the mutation run can attribute it), on
non-symmetric, signed and unseen labels. Expected values are hand computations (or scikit-learn), not the code under
test; no training run."""

import json
import re
from types import SimpleNamespace

import datasets
import pytest
from sklearn.metrics import cohen_kappa_score

from trainers.metrics.qwk.qwk import QWK
from trainers.recipes.multisource import report
from trainers.recipes.multisource.recipe import ClassifierSettings, MultiSourceRecipe, find_labels, label_ids
from trainers.recipes.multisource.report import combine, middle_mean, results_table, table_markdown

HEADER = "| model | metric | A. Source | B. English | A+B (Proposed) |\n|---|---|---:|---:|---:|\n"


def run(setting, seed, test, validation):
    return {"setting": setting, "seed": seed, "test": test, "validation": validation}


# --- the table of one run -----------------------------------------------------------------------------------------


def test_middle_mean_of_nothing_says_so():
    with pytest.raises(ValueError, match=r"^middle_mean needs at least one value\.$"):
        middle_mean([])


def test_results_table_holds_each_requested_setting_in_order_with_its_seeds():
    # binary fractions, so that every mean is exact: A sorted 0 .25 .5 .75 1 -> (.25 + .5 + .75) / 3 = .5;
    # B two seeds, nothing dropped -> (.25 + 1) / 2 = .625; A+B sorted .25 .75 1 -> .75 (the median)
    runs = [run("A", 0, 0.5, 0.1), run("B", 0, 0.25, 0.2), run("A+B", 0, 0.75, 0.3), run("A", 1, 1.0, 0.4),
            run("A+B", 1, 0.25, 0.5), run("A", 2, 0.75, 0.6), run("B", 1, 1.0, 0.7), run("A", 3, 0.0, 0.8),
            run("A+B", 2, 1.0, 0.9), run("A", 4, 0.25, 1.0)]
    table = results_table(runs, ["A+B", "B", "A"], "qwk", "org/model")
    assert table == {"metric": "qwk", "classifier": "org/model", "settings": {
        "A+B": {"score": 0.75, "seeds": [0, 1, 2], "test": [0.75, 0.25, 1.0], "validation": [0.3, 0.5, 0.9],
                "trimmed": True},
        "B": {"score": 0.625, "seeds": [0, 1], "test": [0.25, 1.0], "validation": [0.2, 0.7], "trimmed": False},
        "A": {"score": 0.5, "seeds": [0, 1, 2, 3, 4], "test": [0.5, 1.0, 0.75, 0.0, 0.25],
              "validation": [0.1, 0.4, 0.6, 0.8, 1.0], "trimmed": True},
    }}
    assert list(table["settings"]) == ["A+B", "B", "A"]


def entry(score):
    return {"score": score, "seeds": [0], "test": [score], "validation": [score], "trimmed": False}


# two runs' tables: the second has no B (a dash) and a tie for its best (both bold)
TABLES = [
    {"metric": "accuracy", "classifier": "org/model-a", "settings": {"A": entry(0.5), "B": entry(0.625),
                                                                      "A+B": entry(0.75)}},
    {"metric": "qwk", "classifier": "org/model-b", "settings": {"A": entry(0.8), "A+B": entry(0.8)}},
]


def rows(first, second):
    return (HEADER + f"| {first} | accuracy | 0.500 | 0.625 | **0.750** |\n"
            f"| {second} | qwk | **0.800** | - | **0.800** |\n")


def test_table_markdown_is_table_2_with_dashes_ties_and_names():
    assert table_markdown(TABLES) == rows("org/model-a", "org/model-b")  # no names: the classifiers
    assert table_markdown(TABLES, ["de", "fr"]) == rows("de", "fr")


def test_combine_writes_one_table_and_plots_the_same_tables_and_names(tmp_path, monkeypatch):
    folders = []
    for name, table in zip(("de", "fr"), TABLES):
        (tmp_path / name).mkdir()
        (tmp_path / name / "multisource_results.json").write_text(json.dumps(table))
        folders.append(str(tmp_path / name))
    plotted = []
    monkeypatch.setattr(report, "plot_tables", lambda tables, path, names=None: plotted.append((tables, path, names)))
    prefix = tmp_path / "both"
    assert combine(folders, str(prefix)) == rows("de", "fr")  # no names: the folders' names
    assert (tmp_path / "both.md").read_text() == rows("de", "fr")
    assert plotted == [(TABLES, f"{prefix}.png", ["de", "fr"])]
    plotted.clear()
    assert combine(folders, str(prefix), ["German", "French"]) == rows("German", "French")
    assert plotted == [(TABLES, f"{prefix}.png", ["German", "French"])]


# --- the recipe's figures and its saved run -------------------------------------------------------------------


def test_summary_is_the_metric_and_each_settings_score():
    table = {"metric": "qwk", "classifier": "org/model", "settings": {"B": entry(0.25), "A+B": entry(0.5)}}
    assert MultiSourceRecipe.summary(None, {"table": table, "runs": []}) == {"metric": "qwk", "B": 0.25, "A+B": 0.5}


def test_saved_run_is_the_last_settings_best_on_validation():
    runs = [run("A", 0, 0.1, 0.3), run("B", 0, 0.9, 0.99), run("A", 1, 0.2, 0.7), run("A+B", 0, 0.95, 0.98),
            run("A", 2, 0.3, 0.5)]
    recipe = SimpleNamespace(settings=ClassifierSettings(settings=["B", "A+B", "A"]))  # the last setting: A
    assert MultiSourceRecipe.saved_run(recipe, {"runs": runs}) == run("A", 1, 0.2, 0.7)


# --- label sets ----------------------------------------------------------------------------------------------------


def test_a_label_set_is_read_from_the_folder_or_else_its_parent(tmp_path):
    folder = tmp_path / "topics" / "de"
    folder.mkdir(parents=True)
    assert find_labels(folder) == (None, None)
    parent_file = tmp_path / "topics" / "labels.json"
    parent_file.write_text('["négatif", "neutre", "positif"]', encoding="utf-8")  # shared by every language
    assert find_labels(folder) == (parent_file, ["négatif", "neutre", "positif"])
    (folder / "labels.json").write_text('["a", "b"]', encoding="utf-8")  # the folder's own comes first
    assert find_labels(folder) == (folder / "labels.json", ["a", "b"])


@pytest.mark.parametrize("content", [[], {"a": "b"}, "ab", ["a", 1]])
def test_a_label_set_that_is_not_a_list_of_names_is_refused(tmp_path, content):
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError) as error:
        find_labels(tmp_path)
    assert str(error.value) == f"{path} must hold a non-empty list of label names, got {content!r}."


def test_labels_are_given_by_name_or_by_index():
    assert label_ids(["high", "0", " 2", "mid"], ["low", "mid", "high"], "f.tsv", "S") == [2, 0, 2, 1]


def refusal(values, names):
    with pytest.raises(ValueError) as error:
        label_ids(values, names, "data/test.tsv", "of data/train.tsv")
    return str(error.value)


def test_an_unknown_label_is_refused_with_its_line_and_the_label_set():
    names = ["low", "mid", "high"]
    tail = "is not in the label set of data/train.tsv (3 labels: ['low', 'mid', 'high']); fix the row or add the " \
           "label to the set."
    # the header is line 1: the second value is on line 3; index 3 is one past the last label
    assert refusal(["low", "3"], names) == f"data/test.tsv, line 3: label '3' {tail}"
    assert refusal(["x"], names) == f"data/test.tsv, line 2: label 'x' {tail}"


@pytest.mark.parametrize("count, shown", [(12, ""), (13, " ..."), (14, " ...")])
def test_the_refusal_lists_at_most_twelve_labels(count, shown):
    names = [f"n{index}" for index in range(count)]
    first_twelve = "['n0', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'n7', 'n8', 'n9', 'n10', 'n11']"
    expected = f"({count} labels: {first_twelve}{shown}); fix the row"
    assert expected in refusal(["z"], names)


# --- QWK, imported directly ---------------------------------------------------------------------------------------


def test_qwk_by_hand_on_a_non_symmetric_confusion():
    # references 0 0 1 2 2, predictions 0 1 1 1 2: disagreements (0,1) and (2,1), each weight 1: 2;
    # expected: row totals r = (2, 1, 2), column totals p = (1, 3, 1), sum r_i p_j (i - j)^2 / n = 30 / 5 = 6;
    # kappa = 1 - 2 / 6 (unweighted kappa would be (3/5 - 7/25) / (1 - 7/25) = 4/9)
    references, predictions = [0, 0, 1, 2, 2], [0, 1, 1, 1, 2]
    result = QWK()._compute(predictions, references)
    assert result == {"qwk": pytest.approx(2 / 3, abs=1e-12)}
    assert result["qwk"] == pytest.approx(cohen_kappa_score(references, predictions, weights="quadratic"), abs=1e-12)
    assert QWK()._compute(predictions, references, num_labels=3) == result


def test_qwk_counts_an_unseen_label_in_the_distances_only_with_num_labels():
    # labels 0 1 3: with num_labels=4 label 3 is three steps from 0; without, the sorted labels seen (0 1 3) are
    # ranks 0 1 2. References 0 1 3 3, predictions 0 3 3 1, r = p = {0: 1, 1: 1, 3: 2}, n = 4:
    # num_labels=4: observed (1,3) + (3,1) = 4 + 4 = 8, expected (1 + 18 + 1 + 8 + 18 + 8) / 4 = 13.5: 1 - 8/13.5
    # ranks: observed 1 + 1 = 2, expected (1 + 8 + 1 + 2 + 8 + 2) / 4 = 5.5: 1 - 2/5.5
    references, predictions = [0, 1, 3, 3], [0, 3, 3, 1]
    assert QWK()._compute(predictions, references, num_labels=4) == {"qwk": pytest.approx(11 / 27, abs=1e-12)}
    assert QWK()._compute(predictions, references) == {"qwk": pytest.approx(7 / 11, abs=1e-12)}


def test_qwk_orders_signed_labels_as_numbers():
    # WRIME's -2..2 without num_labels: ranks 0..4; references 0 1 2 3 4, predictions 1 1 2 4 4: observed 1 + 1 = 2,
    # expected: every row total 1, column totals (0, 2, 1, 0, 2): (2 * 15 + 10 + 2 * 30) / 5 = 20; 1 - 2/20
    metric = QWK(keep_in_memory=True)
    assert metric._compute([-1, -1, 0, 2, 2], [-2, -1, 0, 1, 2]) == {"qwk": pytest.approx(0.9, abs=1e-12)}
    # through evaluate's compute: signed int64 features
    assert metric.compute(predictions=[-1, -1, 0, 2, 2], references=[-2, -1, 0, 1, 2]) == {"qwk": pytest.approx(0.9)}
    with pytest.raises(ValueError, match=re.escape("qwk: predictions holds label -1, outside [0, 5); map labels to "
                                                   "0..num_labels-1 or raise num_labels.")):
        metric._compute([-1, 0], [0, 1], num_labels=5)


@pytest.mark.parametrize("predictions, references, num_labels, message", [
    ([], [], None, "qwk got empty predictions and references: pass at least one labelled example."),
    ([0, 1], [1, 0], 0, "qwk: num_labels must be a positive int, got 0."),
    ([0, 1], [1, 0], -1, "qwk: num_labels must be a positive int, got -1."),
    # num_labels=1 is allowed; the one label it allows is then the single-label case
    ([0, 0], [0, 0], 1, "qwk is undefined: predictions and references all hold the single label 0, so no "
                        "disagreement is possible; evaluate on examples with more than one label."),
    ([2], [2], None, "qwk is undefined: predictions and references all hold the single label 2, so no disagreement "
                     "is possible; evaluate on examples with more than one label."),
    ([0, 5, 7], [0, 1, 2], 3, "qwk: predictions holds label 5, outside [0, 3); map labels to 0..num_labels-1 or "
                              "raise num_labels."),
    ([0, 1, 2], [0, 3, 1], 3, "qwk: references holds label 3, outside [0, 3); map labels to 0..num_labels-1 or "
                              "raise num_labels."),
])
def test_qwk_refusals_name_the_value_and_the_fix(predictions, references, num_labels, message):
    with pytest.raises(ValueError) as error:
        QWK()._compute(predictions, references, num_labels=num_labels)
    assert str(error.value) == message


def test_qwk_module_info():
    metric = QWK(keep_in_memory=True)
    assert metric.features == datasets.Features({"predictions": datasets.Value("int64"),
                                                 "references": datasets.Value("int64")})
    assert metric.reference_urls == [
        "https://scikit-learn.org/stable/modules/generated/sklearn.metrics.cohen_kappa_score.html"]
    assert "Quadratic weighted kappa (Cohen, 1968)" in metric.description
    assert "@article{cohen1968weighted" in metric.citation
    assert "num_labels (`int`, optional)" in metric.inputs_description
