import json
import subprocess
import sys

import numpy as np
import pytest
from huggingface_hub import ModelCard

from trainers.cards import update_card_results
from trainers.evaluation.suite import EvaluatorCallback, flat_metrics, load_suite, run_suite
from trainers.loading import load_embedder, load_encoder

from .conftest import SHARED_DATA, requires_shared
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
    keys = [(r["dataset"]["type"], r["dataset"].get("config"), m["type"]) for r in index["results"] for m in r["metrics"]]
    assert len(keys) == len(set(keys))
    assert ("wordsim", None, "spearman") in keys and ("dev_en-de", None, "p@1") in keys
    assert ("libreoffice-parallel", "en-de", "precision_at_1") in keys  # the training card's entries are kept
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
    ours, _ = load_embedder(folder)
    st, languages = load_embedder(folder, backend="sentence-transformers")
    texts = ["open the file", "Öffnen Sie die Datei"]
    np.testing.assert_allclose(st(texts), ours(texts), rtol=1e-4, atol=1e-5)
    assert languages is None


def test_callback_logs_into_the_trainer_log(saved_model, dev_dir, tmp_path):
    from transformers import TrainerControl, TrainerState

    folder, model, tokenizer = saved_model
    suite = tmp_path / "dev.yaml"
    suite.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_dir: {dev_dir}, languages: [de]}}\n")
    evaluators = load_suite(suite, model.config.languages)
    callback = EvaluatorCallback(evaluators, tokenizer, eval_steps=5)
    state = TrainerState(global_step=5, max_steps=10)
    callback.on_step_end(None, state, TrainerControl(), model=model)
    state.global_step = 6
    callback.on_step_end(None, state, TrainerControl(), model=model)
    assert [entry["step"] for entry in state.log_history] == [5]
    assert "eval_dev_en-de_p@1" in state.log_history[0]


def test_shipped_default_suite_runs_on_the_embedded_heldout_pairs(saved_model):
    folder, model, _ = saved_model
    embed, languages = load_embedder(folder)
    evaluators = load_suite("configs/eval_default.yaml", languages)  # shipped suite, found by name
    assert [e.name for e in evaluators][:3] == ["heldout_en-ar", "heldout_en-cs", "heldout_en-da"]
    assert len(evaluators) == 26 and len(evaluators[0].sources) == 200
    assert [e.name for e in evaluators][-2:] == ["debian_en-de", "debian_en-fr"] and len(evaluators[-1].sources) == 739
    results = run_suite(evaluators[:2], embed)
    assert 0 <= results["heldout_en-ar"]["metrics"]["p@1"] <= 1


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
