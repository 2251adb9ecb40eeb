import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub import ModelCard

from trainers.cards import update_card_results
from trainers.data import DEFAULT_HELDOUT, DEFAULT_TRAIN
from trainers.evaluation.common import read_tsv
from trainers.evaluation.eigen import EigenSimilarityEvaluator
from trainers.evaluation.retrieval import RetrievalEvaluator
from trainers.evaluation.suite import TASK_SETTINGS, flat_metrics, load_suite, run_suite
from trainers.loading import load_embedder, load_encoder

from .conftest import SHARED_DATA, read_pairs, requires_shared
from .test_cards import fake_results, write_ems_card


def write_suite(tmp_path, dev_dir):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"""
tasks:
  dev:
    type: retrieval
    pairs_dir: {dev_dir}
    languages: model
  wordsim:
    type: similarity
    path: {SHARED_DATA}/similarity/en-wordsim353-sim.tsv
    limit: 40
  topics:
    type: classification
    train_dir: {SHARED_DATA}/classification/topics/en
    test_dirs: {{de: {SHARED_DATA}/classification/topics/de}}
    metric: accuracy
    seeds: [0]
    limit: 60
  mining:
    type: mining
    pairs_file: {dev_dir}/de.tsv
""")
    return suite


@pytest.fixture
def dev_dir(tmp_path, heldout_pairs):
    folder = tmp_path / "dev"
    folder.mkdir()
    for code in ("de", "fr", "xx"):
        rows = [r for r in heldout_pairs if r["tgt_lang"] == code][:40] or heldout_pairs[:40]
        (folder / f"{code}.tsv").write_text("en\ttext\n" + "".join(f"{r['src']}\t{r['tgt']}\n" for r in rows))
    return folder


@requires_shared
def test_suite_runs_every_task_on_a_saved_model_and_updates_the_card(saved_model, tmp_path, dev_dir):
    folder, model, _ = saved_model
    embed, languages = load_embedder(folder)
    assert languages == model.config.languages
    evaluators = load_suite(write_suite(tmp_path, dev_dir), languages)
    names = [e.name for e in evaluators]
    assert names == ["dev_en-de", "dev_en-fr", "wordsim", "topics", "mining"]  # xx is not a model language
    results = run_suite(evaluators, embed)
    assert set(results["dev_en-de"]["metrics"]) >= {"p@1", "p@1_src2tgt", "p@1_tgt2src"}
    assert results["topics"]["task"] == "classification" and "de_accuracy" in results["topics"]["metrics"]
    assert "f1" in results["mining"]["metrics"]
    flat = flat_metrics(results)
    assert all(np.isfinite(v) for v in flat.values())

    write_ems_card(folder, model, fake_results([c for c in languages if c != "en"]))
    update_card_results(folder, results, suite="suite.yaml")
    update_card_results(folder, results, suite="suite.yaml")  # idempotent: replaces, never duplicates
    card = ModelCard.load(folder / "README.md")
    (index,) = card.data.to_dict()["model-index"]
    keys = [(r["dataset"]["type"], r["dataset"].get("config"), m["type"])
            for r in index["results"] for m in r["metrics"]]
    assert len(keys) == len(set(keys))
    assert ("wordsim", None, "spearman") in keys and ("dev_en-de", None, "p@1") in keys
    assert ("libreoffice-translations", "en-de", "precision_at_1") in keys  # the training card's entries are kept
    assert card.text.count("## Evaluation suite `suite.yaml`") == 1


def test_evaluate_script_writes_results(saved_model, tmp_path, dev_dir):
    folder, _, _ = saved_model
    suite = tmp_path / "small.yaml"
    suite.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_dir: {dev_dir}, languages: [de]}}\n")
    output = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "scripts/evaluate_model.py", "--model", str(folder), "--suite", str(suite),
                             "--output", str(output)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "p@1" in json.loads(output.read_text())["results"]["dev_en-de"]["metrics"]


def test_sentence_transformers_backend_gives_the_same_embeddings(saved_model):
    folder, _, _ = saved_model
    ours, ours_languages = load_embedder(folder)
    st, languages = load_embedder(folder, backend="sentence-transformers")
    texts = ["open the file", "Öffnen Sie die Datei"]
    np.testing.assert_allclose(st(texts), ours(texts), rtol=1e-4, atol=1e-5)
    assert languages == ours_languages == ["de", "en", "fr", "ja", "ru"]  # read from config.json either way


def test_shipped_default_suite_runs_on_the_embedded_heldout_pairs(saved_model):
    folder, model, _ = saved_model
    embed, languages = load_embedder(folder)
    evaluators = load_suite("configs/eval_default.yaml", languages)  # shipped suite, found by name
    assert [e.name for e in evaluators][:3] == ["heldout_en-ar", "heldout_en-cs", "heldout_en-da"]
    assert len(evaluators) == 26 and len(evaluators[0].sources) == 200
    assert [e.name for e in evaluators][-2:] == ["debian_en-de", "debian_en-fr"] and len(evaluators[-1].sources) == 739
    results = run_suite(evaluators[:2], embed)
    assert 0 <= results["heldout_en-ar"]["metrics"]["p@1"] <= 1


def test_the_evaluate_command_runs_the_shipped_default_suite_on_a_fresh_clone(saved_model, tmp_path):
    from trainers.cli import evaluate
    from trainers.config import shipped_configs

    folder, _, _ = saved_model
    evaluate(["--model", str(folder), "--output", str(tmp_path / "results.json")])  # no --suite: eval_default
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["suite"] == "eval_default" and saved["pending"] == []
    assert {"heldout_en-de", "debian_en-fr"} <= set(saved["results"])  # shipped data only: no ../shared needed
    runs, suites = shipped_configs("run"), shipped_configs("suite")  # listed apart in --help
    assert {"ems_default", "multitask_default"} <= set(runs) and {"eval_default", "eval_shared"} <= set(suites)
    assert not set(runs) & set(suites) and set(runs) | set(suites) == set(shipped_configs())


def test_bad_suites_are_clear_errors(tmp_path, dev_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_suite(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("tasks:\n  x: {type: telepathy}\n")
    with pytest.raises(ValueError, match="type 'telepathy'"):
        load_suite(bad)
    bad.write_text("tasks:\n  x: {type: similarity}\n")
    with pytest.raises(ValueError, match="needs the setting 'path'"):
        load_suite(bad)
    bad.write_text(f"tasks:\n  x: {{type: retrieval, pairs_dir: {dev_dir}, languages: [qq]}}\n")
    with pytest.raises(ValueError, match="qq"):
        load_suite(bad)
    # a file that is not there is named with its task, before anything runs
    bad.write_text(f"tasks:\n  ok: {{type: retrieval, pairs_dir: {dev_dir}}}\n"
                   f"  sts: {{type: similarity, path: {tmp_path / 'missing.tsv'}}}\n")
    with pytest.raises(FileNotFoundError, match=r"task 'sts' \(similarity\): No such data file.*missing\.tsv"):
        load_suite(bad)
    # a misspelt setting is not silently ignored
    bad.write_text(f"tasks:\n  x: {{type: retrieval, pairs_dir: {dev_dir}, precision_at: [1], num_distractor: 9}}\n")
    with pytest.raises(ValueError, match=r"task 'x' \(retrieval\) has unknown settings \['num_distractor'\]"):
        load_suite(bad)
    bad.write_text(f"tasks:\n  x: {{type: retrieval, pairs_dir: {dev_dir}, num_distractors: 9}}\n")
    with pytest.raises(ValueError, match="num_distractors=9 has no effect without precision_at"):
        load_suite(bad)
    bad.write_text(f"tasks:\n  x: {{type: retrieval, pairs_dir: {dev_dir}, precision_at: [1, 5]}}\n")  # K = 999
    with pytest.raises(ValueError, match=r"task 'x' \(retrieval\): num_distractors=999 needs at least 1000 targets"):
        load_suite(bad)
    bad.write_text("tasks:\n  x: [retrieval]\n")
    with pytest.raises(ValueError, match="task 'x' is \\['retrieval'\\]; write its settings as a mapping"):
        load_suite(bad)


def random_embed(texts):
    """A fixed random unit vector per text (seeded by the text), for protocol tests that need no model."""
    rows = [np.random.default_rng(list(text.encode())).standard_normal(16) for text in texts]
    return np.stack(rows) / np.linalg.norm(rows, axis=1, keepdims=True)


def test_distractor_settings_come_from_the_suite(tmp_path, dev_dir):
    suite = tmp_path / "pn.yaml"
    suite.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_dir: {dev_dir}, languages: [de], precision_at: [1, 5],"
                     " num_distractors: 9, seed: 3}\n")
    (evaluator,) = load_suite(suite)
    assert (evaluator.precision_at, evaluator.num_distractors, evaluator.seed) == ([1, 5], 9, 3)
    metrics = run_suite([evaluator], random_embed)["dev_en-de"]["metrics"]
    assert set(metrics) == {"p@1", "p@1_src2tgt", "p@1_tgt2src", "p@1_k9", "p@5_k9"}
    direct = RetrievalEvaluator(evaluator.sources, evaluator.targets, precision_at=[1, 5], num_distractors=9, seed=3,
                                name="direct")(random_embed)
    assert metrics["p@5_k9"] == direct["direct_p@5_k9"] and metrics["p@1_k9"] == direct["direct_p@1_k9"]
    # against 9 distractors P@1 is far above the full pool's (40 pairs): the setting took effect
    assert metrics["p@1_k9"] > metrics["p@1_src2tgt"]


def test_a_failing_task_is_reported_and_the_others_run_and_are_saved_as_they_go(tmp_path, dev_dir):
    constant = tmp_path / "constant.tsv"  # a degenerate score column: every pair scored 3.0
    constant.write_text("text1\ttext2\tscore\tlang1\tlang2\n" + "".join(
        f"word {i}\tterm {i}\t3.0\ten\ten\n" for i in range(10)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  flat: {{type: similarity, path: {constant}}}\n"
                     f"  dev: {{type: retrieval, pairs_dir: {dev_dir}, languages: [de, fr]}}\n")
    output = tmp_path / "out" / "results.json"
    seen_on_disk = []

    def embed(texts):  # what the JSON holds whenever a later task starts embedding
        if output.is_file():
            seen_on_disk.append(json.loads(output.read_text()))
        return random_embed(texts)

    results = run_suite(load_suite(suite), embed, output=output, metadata={"model": "random", "suite": str(suite)})
    assert list(results) == ["flat", "dev_en-de", "dev_en-fr"]
    assert results["flat"]["error"].startswith("ValueError: spearman: all references equal 3.0")
    assert "metrics" not in results["flat"]
    assert 0 <= results["dev_en-de"]["metrics"]["p@1"] <= 1 and results["dev_en-fr"]["task"] == "retrieval"
    # nothing was written before the first task ended; then, as each later task ran, the file already held the
    # tasks before it (the failure included) and named those still to come (each retrieval embeds twice)
    assert [list(seen["results"]) for seen in seen_on_disk] == [["flat"]] * 2 + [["flat", "dev_en-de"]] * 2
    assert seen_on_disk[0]["pending"] == ["dev_en-de", "dev_en-fr"] and seen_on_disk[-1]["pending"] == ["dev_en-fr"]
    assert seen_on_disk[0]["model"] == "random" and seen_on_disk[0]["results"]["flat"] == results["flat"]
    assert json.loads(output.read_text()) == {"model": "random", "suite": str(suite), "results": results,
                                              "pending": []}
    flat = flat_metrics(results)
    assert "dev_average_p@1" in flat and not any(key.startswith("flat_") for key in flat)
    assert flat["dev_average_p@1"] == pytest.approx(
        (results["dev_en-de"]["metrics"]["p@1"] + results["dev_en-fr"]["metrics"]["p@1"]) / 2)


def test_languages_model_falls_back_to_the_data_for_a_model_without_languages(tmp_path, dev_dir):
    """A baseline such as all-MiniLM-L6-v2 names no languages: `languages: model` takes every language of the data
    and the results say so."""
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_dir: {dev_dir}, languages: model}}\n")
    assert [e.name for e in load_suite(suite, ["de"])] == ["dev_en-de"]
    evaluators = load_suite(suite, None)
    assert [e.name for e in evaluators] == ["dev_en-de", "dev_en-fr", "dev_en-xx"]
    results = run_suite(evaluators, random_embed)
    for entry in results.values():
        assert entry["note"] == (f"languages: model, but the model names no languages: evaluated on every language "
                                 f"of {dev_dir}")
        assert entry["suite_task"] == "dev" and "p@1" in entry["metrics"]


def test_folders_that_are_not_encoders_are_rejected(tmp_path, saved_model):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_encoder(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        load_encoder(empty)
    (empty / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_encoder(empty)
    (empty / "config.json").write_text('{"hello": 1}')
    with pytest.raises(ValueError, match="names no model_type"):
        load_encoder(empty)
    (empty / "config.json").write_text('{"model_type": "no-such-model"}')
    with pytest.raises(ValueError, match="Cannot load an encoder"):
        load_encoder(empty)
    folder, _, _ = saved_model
    (folder / "model.safetensors").write_bytes(b"this is not a safetensors file")
    with pytest.raises(ValueError, match="Cannot load an encoder"):
        load_encoder(folder)
    with pytest.raises(ValueError, match="not a sentence-transformers folder"):
        load_embedder(empty, backend="sentence-transformers")


def test_eigen_task_builds_one_evaluator_per_language_on_english_against_its_translations(tmp_path, dev_dir):
    suite = tmp_path / "eigen.yaml"
    suite.write_text(f"tasks:\n  eigen: {{type: eigen, pairs_dir: {dev_dir}, languages: model, sample_size: 5,"
                     " num_samples: 20, seed: 3, limit: 30}\n")
    evaluators = load_suite(suite, ["de", "en", "fr"])  # English is never paired with itself; xx is no model language
    assert [e.name for e in evaluators] == ["eigen_en-de", "eigen_en-fr"]
    for evaluator, code in zip(evaluators, ("de", "fr")):
        table = read_tsv(dev_dir / f"{code}.tsv", ("en", "text"), limit=30)
        assert isinstance(evaluator, EigenSimilarityEvaluator) and evaluator.suite_task == "eigen"
        assert (evaluator.texts_a, evaluator.texts_b) == (table["en"], table["text"])
        assert (evaluator.sample_size, evaluator.num_samples, evaluator.seed) == (5, 20, 3)
    results = run_suite(evaluators, random_embed)
    direct = EigenSimilarityEvaluator(evaluators[0].texts_a, evaluators[0].texts_b, sample_size=5, num_samples=20,
                                      seed=3, name="direct")(random_embed)
    assert results["eigen_en-de"] == {"task": "eigen", "suite_task": "eigen",
                                      "metrics": {"eigen_similarity": direct["direct_eigen_similarity"]}}
    assert "eigen_average_eigen_similarity" in flat_metrics(results)
    # languages chosen as for retrieval: a model naming none gets every language of the data, and a note says so
    for evaluator in load_suite(suite, None):
        assert evaluator.note.startswith("languages: model, but the model names no languages")
    shipped = tmp_path / "shipped.yaml"
    shipped.write_text("tasks:\n  heldout: {type: eigen, pairs_file: default/heldout.jsonl.gz, languages: [ja]}\n")
    (evaluator,) = load_suite(shipped)
    expected = read_pairs(DEFAULT_HELDOUT, ["ja"])
    assert (evaluator.texts_a, evaluator.texts_b) == ([r["src"] for r in expected], [r["tgt"] for r in expected])
    assert (evaluator.name, evaluator.sample_size, evaluator.num_samples, evaluator.note) == ("heldout_en-ja", 10,
                                                                                             1000, None)


def test_bad_eigen_tasks_are_clear_errors(tmp_path, dev_dir):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"tasks:\n  x: {{type: eigen, pairs_dir: {dev_dir}, precision_at: [1]}}\n")
    with pytest.raises(ValueError, match=r"task 'x' \(eigen\) has unknown settings \['precision_at'\]; eigen tasks "
                                         r"take \['pairs_file', 'pairs_dir', 'languages', 'limit', 'sample_size'"):
        load_suite(bad)
    bad.write_text(f"tasks:\n  x: {{type: eigen, pairs_dir: {dev_dir}, sample_size: 50}}\n")  # 40 pairs a language
    with pytest.raises(ValueError, match=r"task 'x' \(eigen\): sample_size is 50 with 40 translation pairs"):
        load_suite(bad)
    bad.write_text(f"tasks:\n  x: {{type: eigen, pairs_dir: {dev_dir}, num_samples: 0}}\n")
    with pytest.raises(ValueError, match=r"task 'x' \(eigen\): num_samples is 0"):
        load_suite(bad)
    bad.write_text(f"tasks:\n  x: {{type: eigen, pairs_dir: {dev_dir}, languages: [qq]}}\n")
    with pytest.raises(ValueError, match=r"has no pairs for \['qq'\]"):
        load_suite(bad)
    bad.write_text(f"tasks:\n  x: {{type: eigen, pairs_dir: {dev_dir}, pairs_file: {dev_dir}/de.tsv}}\n")
    with pytest.raises(ValueError, match="set exactly one of pairs_file"):
        load_suite(bad)
    assert set(TASK_SETTINGS["eigen"]) == {"pairs_file", "pairs_dir", "languages", "limit", "sample_size",
                                           "num_samples", "seed"}


@requires_shared
def test_shipped_multitask_suite_builds_every_task_of_the_paper_comparison():
    with gzip.open(DEFAULT_TRAIN, "rt", encoding="utf-8") as handle:
        corpus = sorted({json.loads(line)["tgt_lang"] for line in handle})  # a default-corpus model's languages
    evaluators = load_suite("configs/eval_multitask.yaml", ["en", *corpus])  # shipped suite, found by name
    by_task = {}
    for evaluator in evaluators:
        by_task.setdefault(evaluator.suite_task, []).append(evaluator)
    assert list(by_task) == ["heldout", "debian", "dev", "dev_k999", "simlex999", "wordsim353", "men", "semeval17",
                             "lee50", "topics", "eigen"]
    assert len(by_task["heldout"]) == 24 and [e.name for e in by_task["debian"]] == ["debian_en-de", "debian_en-fr"]
    model_pairs = [f"en-{code}" for code in corpus]
    assert [e.name.removeprefix("dev_") for e in by_task["dev"]] == model_pairs
    assert [e.name.removeprefix("eigen_") for e in by_task["eigen"]] == model_pairs
    assert {(e.sample_size, e.num_samples) for e in by_task["eigen"]} == {(10, 300)}
    assert max(len(e.texts_a) for e in by_task["eigen"]) == 500
    # P@1 against K = 999 distractors on exactly the corpus's languages with at least 1000 dev pairs
    dev = SHARED_DATA / "parallel" / "dev"
    large = [code for code in corpus if len(read_tsv(dev / f"{code}.tsv", ("en",))["en"]) >= 1000]
    assert [e.name for e in by_task["dev_k999"]] == [f"dev_k999_en-{code}" for code in large]
    assert all((e.precision_at, e.num_distractors) == ([1], 999) for e in by_task["dev_k999"])
    assert list(by_task["topics"][0].tests) == ["de", "fr"]
    metrics = run_suite(by_task["eigen"][:1], random_embed)[by_task["eigen"][0].name]["metrics"]
    assert list(metrics) == ["eigen_similarity"] and metrics["eigen_similarity"] > 0
