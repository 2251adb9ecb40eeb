"""Code from a model folder runs only when asked: a sentence-transformers folder (Transformer + Pooling + Normalize)
whose config.json maps its classes to a `my_modeling.py` of its own, which writes a marker file when imported, is
refused by every loader (`load_embedder` with each backend, `load_encoder`, ems-evaluate, compare, mining) with the
flag to pass, and the marker never appears; with `trust_remote_code=True` it appears (so the tests see code run). The
package's own folders, which carry an `auto_map` too, load without the flag."""

import json
import logging

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers import models as st_models
from transformers import BertConfig, BertModel, BertTokenizerFast

from modeling_ems import DualEncoderMultiTask, DualEncoderMultiTaskConfig
from trainers import cli
from trainers.compare import compare_models
from trainers.hard_negatives import main as mine
from trainers.loading import folder_code, load_embedder, load_encoder

from .conftest import save_tiny_model, write_jsonl

WORDS = "open close the file window save print page öffnen schließen die datei fenster speichern drucken seite".split()
PAIRS = [("open the file", "öffnen die datei"), ("close the window", "schließen das fenster"),
         ("save the page", "speichern die seite"), ("print the file", "drucken die datei")]
FIX = "pass --trust_remote_code (trust_remote_code=True) if you trust that code"


@pytest.fixture(autouse=True)
def no_prompt(monkeypatch):
    """transformers asks on the terminal when trust_remote_code is None: no loader here may ever get there."""
    asked = []
    monkeypatch.setattr("builtins.input", lambda *args: asked.append(args) or "n")
    yield
    assert not asked, f"asked on the terminal: {asked}"


def remote_code_folder(folder, model_type="remote_bert"):
    """A tiny BERT saved as a sentence-transformers folder (Transformer + Pooling + Normalize) whose config.json is
    of `model_type` and maps AutoConfig / AutoModel to the folder's `my_modeling.py`, which writes `ran.marker`
    beside the folder when imported. Returns `(folder, marker)`."""
    vocab = folder.parent / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz"]))
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), model_max_length=16)
    torch.manual_seed(0)
    bert = folder.parent / "bert"
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(bert)
    tokenizer.save_pretrained(bert)
    transformer = st_models.Transformer(str(bert))
    dimension = transformer.get_embedding_dimension()
    SentenceTransformer(modules=[transformer, st_models.Pooling(dimension, pooling_mode="mean"), st_models.Normalize()],
                        device="cpu").save(str(folder))
    marker = folder.parent / "ran.marker"
    (folder / "my_modeling.py").write_text(
        "from pathlib import Path\n\n"
        "from transformers import BertConfig, BertModel\n\n"
        f"Path({str(marker)!r}).write_text('my_modeling.py ran')\n\n\n"
        "class RemoteConfig(BertConfig):\n"
        f"    model_type = {model_type!r}\n\n\n"
        "class RemoteModel(BertModel):\n"
        "    config_class = RemoteConfig\n")
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type=model_type, auto_map={"AutoConfig": "my_modeling.RemoteConfig",
                                                   "AutoModel": "my_modeling.RemoteModel"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


@pytest.fixture
def remote(tmp_path):
    return remote_code_folder(tmp_path / "remote")


@pytest.fixture
def suite(tmp_path):
    """One retrieval task on a few English-German pairs."""
    pairs = tmp_path / "pairs"
    pairs.mkdir()
    (pairs / "de.tsv").write_text("en\ttext\n" + "".join(f"{en}\t{de}\n" for en, de in PAIRS))
    path = tmp_path / "suite.yaml"
    path.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_dir: {pairs}, languages: [de]}}\n")
    return path


def assert_refused(message: str, folder):
    """The one error for `folder`: it names the folder, the file of code and the flag."""
    assert str(folder) in message and str(folder / "my_modeling.py") in message and FIX in message, message


@pytest.mark.parametrize("backend", ["auto", "transformers", "sentence-transformers"])
def test_every_backend_refuses_a_folder_with_code_of_its_own_and_runs_nothing(remote, backend):
    folder, marker = remote
    with pytest.raises(ValueError) as error:
        load_embedder(folder, backend=backend, device="cpu")
    assert_refused(str(error.value), folder)
    assert str(error.value).count("my_modeling.py") == 1  # one clear error, each file once
    with pytest.raises(ValueError) as error:
        load_encoder(folder, device="cpu")
    assert_refused(str(error.value), folder)
    assert not marker.exists()


def test_a_custom_sentence_transformers_module_is_refused(remote):
    """A module of modules.json that is not a sentence_transformers class is code of the folder too."""
    folder, marker = remote
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="bert", auto_map={})
    (folder / "config.json").write_text(json.dumps(config))
    modules = json.loads((folder / "modules.json").read_text())
    modules[-1]["type"] = "my_modeling.RemoteModel"
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ValueError) as error:
        load_embedder(folder, device="cpu")
    assert_refused(str(error.value), folder)
    assert not marker.exists()
    load_embedder(folder, backend="transformers", device="cpu")  # the bare BERT runs none of the modules


@pytest.mark.parametrize("backend", ["auto", "transformers"])
def test_with_trust_remote_code_the_folder_code_runs(remote, backend):
    folder, marker = remote
    embed, _ = load_embedder(folder, backend=backend, device="cpu", trust_remote_code=True)
    assert marker.read_text() == "my_modeling.py ran"
    vectors = embed(["open the file", "save the page"])
    assert vectors.shape == (2, 16)
    if backend == "auto":  # through its own modules: Normalize applied
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)


def test_evaluate_command_names_the_flag_and_runs_the_code_only_with_it(remote, suite, tmp_path, capsys):
    folder, marker = remote
    output = tmp_path / "results.json"
    arguments = ["--model", str(folder), "--suite", str(suite), "--output", str(output), "--device", "cpu"]
    with pytest.raises(SystemExit) as stop:
        cli.evaluate(arguments)
    assert stop.value.code == 2
    assert_refused(capsys.readouterr().err.replace("\n", " "), folder)
    assert not marker.exists() and not output.exists()
    cli.evaluate([*arguments, "--trust_remote_code"])
    assert marker.exists()
    assert "p@1" in json.loads(output.read_text())["results"]["dev_en-de"]["metrics"]


def test_compare_reports_the_refusal_and_runs_the_code_only_with_the_flag(remote, suite, tmp_path):
    folder, marker = remote
    refused = compare_models([f"remote={folder}"], suite, load_options={"device": "cpu"})
    assert_refused(refused["models"]["remote"]["error"], folder)
    assert not marker.exists()
    trusted = compare_models([f"remote={folder}"], suite, load_options={"device": "cpu"}, trust_remote_code=True)
    assert trusted["models"]["remote"]["error"] is None and marker.exists()


def test_mining_refuses_the_folder_and_runs_the_code_only_with_the_flag(remote, tmp_path, capsys):
    folder, marker = remote
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"src": en, "tgt": de, "src_lang": "en", "tgt_lang": "de"}
                                                   for en, de in PAIRS])
    arguments = ["--model", str(folder), "--pairs", str(pairs), "--output", str(tmp_path / "mined.jsonl"), "--k", "1"]
    with pytest.raises(SystemExit) as stop:
        mine(arguments)
    assert stop.value.code == 2
    assert_refused(capsys.readouterr().err.replace("\n", " "), folder)
    assert not marker.exists() and not (tmp_path / "mined.jsonl").exists()
    mine([*arguments, "--trust_remote_code"])
    assert marker.exists() and len((tmp_path / "mined.jsonl").read_text().splitlines()) == len(PAIRS)


def test_the_issue_folder_loads_as_plain_bert_without_its_code(tmp_path, caplog):
    """The reported case: all-MiniLM-L6-v2's layout (a `bert` config, Normalize) with an auto_map of its own. Without
    the flag transformers' BERT loads in place of the folder's code, which does not run (a warning says so)."""
    folder, marker = remote_code_folder(tmp_path / "minilm-copy", model_type="bert")
    with caplog.at_level(logging.WARNING, logger="trainers.loading"):
        embed, _ = load_embedder(folder, device="cpu")
    assert embed(["open the file"]).shape == (1, 16)
    assert not marker.exists()
    assert str(folder / "my_modeling.py") in caplog.text and "is not run" in caplog.text
    load_embedder(folder, device="cpu", trust_remote_code=True)
    assert marker.exists()


def test_the_package_folders_load_without_remote_code(tmp_path, tokenizer_dir, caplog):
    """An EMS folder (with its auto_map and code files) through every backend, and a multi-task dual encoder folder,
    with the flag off: the installed package's classes load, nothing is refused or warned about."""
    ems, dual = tmp_path / "ems", tmp_path / "dual"
    model, tokenizer = save_tiny_model(ems, tokenizer_dir)
    DualEncoderMultiTask(DualEncoderMultiTaskConfig(
        vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=32, head_intermediate_size=8, nli_hidden_size=8)).save_pretrained(dual)
    tokenizer.save_pretrained(dual)
    for folder in (ems, dual):
        assert json.loads((folder / "config.json").read_text())["auto_map"]  # the case the guard must let through
        assert folder_code(folder, modules=True) == ([], [])
    texts = ["open the file", "Öffnen Sie die Datei"]
    with caplog.at_level(logging.WARNING, logger="trainers.loading"):
        ours, languages = load_embedder(ems, device="cpu")
        st, _ = load_embedder(ems, backend="sentence-transformers", device="cpu")
        encoder, _ = load_encoder(dual, device="cpu")
    assert languages == model.config.languages
    np.testing.assert_allclose(st(texts), ours(texts), rtol=1e-4, atol=1e-5)
    assert type(encoder) is DualEncoderMultiTask
    assert "code of its own" not in caplog.text
