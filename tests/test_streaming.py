"""`data.streaming: true`: the training pairs read as a stream (`datasets.IterableDataset`), checked, filtered and
tokenized as training consumes them. The same pairs and token ids as the prepared path, less the pairs that share a
text with the evaluation sets; the same errors for the same bad rows; settings a stream cannot have are refused."""

import json
from pathlib import Path

import datasets
import pytest
import yaml
from transformers import AutoModel, AutoTokenizer

from trainers import cli
from trainers.config import DataSettings
from trainers.data import (
    check_languages,
    checked_stream,
    load_parallel_dataset,
    texts_of,
    tokenize_pairs,
    validate_pairs,
)
from trainers.recipes import load_run_config, run_recipe
from trainers.recipes.ems import EMSRecipe
from trainers.recipes.multitask.recipe import MultiTaskRecipe
from trainers.tokenizer import tokenizer_languages

from .conftest import torchrun
from .test_training import tiny_run_config


def streaming_config(tmp_path, small_pairs, heldout_pairs, data=None, **training):
    """The tiny EMS config of tests/test_training.py with `data.streaming` and `data` / `training` changes."""
    run_config = tiny_run_config(tmp_path, small_pairs, heldout_pairs, **training)
    path = Path(run_config.source)
    raw = yaml.safe_load(path.read_text())
    raw["data"].update({"streaming": True, "shuffle_buffer": 1, **(data or {})})
    raw["training"].pop("train_sampling_strategy")
    raw["training"].update(training)
    path.write_text(yaml.safe_dump(raw))
    return load_run_config(path)


def test_the_stream_gives_the_prepared_pairs_and_ids_less_those_sharing_an_evaluation_text(
        tmp_path, small_pairs, heldout_pairs, tokenizer_dir):
    training = small_pairs[:600]
    run_config = streaming_config(tmp_path, training, heldout_pairs + training[:5],
                                  data={"max_train_pairs": 500}, max_steps=10)
    recipe = EMSRecipe(run_config, tmp_path / "run")
    train, evaluation = recipe.load_data()
    assert isinstance(train, datasets.IterableDataset)
    assert recipe.data_report["heldout"] == {"source": run_config.data.heldout, "pairs": len(heldout_pairs) + 5}
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    streamed = list(recipe.prepare_train_data(train, tokenizer, recipe_args(recipe)))

    # independently: the first 500 rows, without the 5 whose texts are evaluation texts, tokenized as prepared
    evaluation_texts = {text for row in heldout_pairs + training[:5] for text in (row["src"], row["tgt"])}
    evaluation_texts |= texts_of(evaluation["out_of_domain"])
    kept = [row for row in training[:500] if row["src"] not in evaluation_texts and row["tgt"] not in evaluation_texts]
    assert len(kept) == 495
    expected = tokenize_pairs(datasets.Dataset.from_list(kept), tokenizer, 48).to_list()
    assert streamed == expected


def recipe_args(recipe):
    from trainers.recipes.base import training_arguments

    return training_arguments(recipe.arguments_class, recipe.run_config, recipe.output_dir)[0]


def bad_file(tmp_path, rows: int, bad_line: int, column: str, value: str):
    lines = ["src\ttgt\tsrc_lang\ttgt_lang"]
    for index in range(rows):
        fields = {"src": f"text {index}", "tgt": f"Text {index}", "src_lang": "en", "tgt_lang": "de"}
        if index + 2 == bad_line:
            fields[column] = value
        lines.append("\t".join(fields.values()))
    path = tmp_path / "pairs.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("column, value, languages", [("tgt", " ", ["de", "en"]), ("tgt_lang", "xx", ["de", "en"]),
                                                     ("tgt_lang", "fr", ["de", "en"])])
def test_a_bad_row_past_the_first_batches_stops_the_stream_with_the_whole_file_s_error(tmp_path, column, value,
                                                                                         languages):
    path = bad_file(tmp_path, 2500, 2103, column, value)
    with pytest.raises(ValueError) as whole:
        pairs = load_parallel_dataset(path)
        validate_pairs(pairs, name=str(path))
        check_languages(pairs, languages, name=str(path))
    stream = checked_stream(load_parallel_dataset(path, streaming=True), languages, str(path), set(), batch_size=700)
    with pytest.raises(ValueError) as streamed:
        list(stream)
    assert "line 2103" in str(whole.value) and str(streamed.value) == str(whole.value)


def test_a_training_pair_with_an_evaluation_text_is_skipped_or_refused(tmp_path):
    path = bad_file(tmp_path, 30, 2, "tgt", "Text 0")
    held_out = {"text 7", "Text 12"}
    stream = load_parallel_dataset(path, streaming=True)
    rows = list(checked_stream(stream, ["de", "en"], str(path), held_out, batch_size=8))
    assert [row["src"] for row in rows] == [f"text {index}" for index in range(30) if index not in (7, 12)]
    with pytest.raises(ValueError, match=r"pairs.tsv, line 9: the pair shares a text with the evaluation data"):
        list(checked_stream(stream, ["de", "en"], str(path), held_out, "error", batch_size=8))


def test_settings_a_stream_cannot_have_are_refused_before_any_work(tmp_path, small_pairs, heldout_pairs):
    with pytest.raises(ValueError, match=r"set training.max_steps \(now None\)"):
        EMSRecipe(streaming_config(tmp_path, small_pairs[:10], heldout_pairs, max_steps=None), tmp_path / "a")
    config = streaming_config(tmp_path, small_pairs[:10], heldout_pairs, max_steps=5,
                              train_sampling_strategy="group_by_length")
    with pytest.raises(ValueError, match="group_by_length sorts the whole corpus by length, which a stream cannot"):
        EMSRecipe(config, tmp_path / "b")
    config = streaming_config(tmp_path, small_pairs[:10], heldout_pairs, max_steps=5)
    with pytest.raises(ValueError, match="recipe 'multitask' needs its whole training data"):
        MultiTaskRecipe.check_streaming(MultiTaskRecipe, config)
    with pytest.raises(ValueError, match="data.streaming='yes': use true or false"):
        DataSettings(streaming="yes")
    with pytest.raises(ValueError, match="data.shuffle_buffer=0: use a number of pairs >= 1"):
        DataSettings(shuffle_buffer=0)
    folder = tmp_path / "dev"
    folder.mkdir()
    (folder / "de.tsv").write_text("en\ttext\nOpen\tÖffnen\n")
    with pytest.raises(ValueError, match="is a folder of LANG.tsv files"):
        load_parallel_dataset(folder, streaming=True)


@pytest.mark.slow
def test_ems_prepare_trains_the_vocabulary_on_the_stream_and_the_run_saves_a_loadable_folder_and_resumes(
        tmp_path, small_pairs, heldout_pairs, capsys):
    output_dir = tmp_path / "run"
    run_config = streaming_config(tmp_path, small_pairs, heldout_pairs, data={"shuffle_buffer": 256},
                                  max_steps=8, save_steps=4, logging_steps=4, eval_steps=100)
    cli.prepare(["--config", str(run_config.source), "--output_dir", str(output_dir)])  # the tokenizer, no pairs
    assert "a stream of training pairs" in capsys.readouterr().out
    assert (output_dir / "tokenizer.json").is_file() and not (output_dir / "prepared").exists()
    results = run_recipe(run_config, output_dir)
    assert results["data"]["train"] == {"source": run_config.data.train, "streaming": True}
    assert results["training"]["global_step"] == 8
    assert set(tokenizer_languages(AutoTokenizer.from_pretrained(output_dir))) >= {"en", "de"}
    model = AutoModel.from_pretrained(output_dir)
    assert model.config.hidden_size == 128 and "p@1" in results["heldout"]["model"]["average"]
    assert (output_dir / "checkpoint-8").is_dir()  # what the longer run resumes from
    longer = streaming_config(tmp_path, small_pairs, heldout_pairs, data={"shuffle_buffer": 256},
                              max_steps=12, save_steps=4, logging_steps=4, eval_steps=100)
    resumed = run_recipe(longer, output_dir)
    assert resumed["training"]["global_step"] == 12


@pytest.mark.slow
def test_two_processes_read_the_stream_as_one_process_does_whether_dispatched_or_each_reading(
        tmp_path, small_pairs, heldout_pairs, tokenizer_dir):
    """No dropout, the same global batch (2 x 16 or 1 x 32): accelerate's two ways of feeding processes from a
    stream (the main process reads and dispatches; each process reads and keeps its own batches) train the model
    one process trains, to the same loss and held-out P@1."""
    outcomes = {}
    for name, processes, accelerator in [("one", 1, {}), ("dispatched", 2, {}),
                                         ("each_reads", 2, {"dispatch_batches": False})]:
        (tmp_path / name).mkdir()
        config = streaming_config(tmp_path / name, small_pairs[:2000], heldout_pairs[:200],
                                  data={"shuffle_buffer": 100}, max_steps=6, save_steps=6, logging_steps=2,
                                  eval_steps=100, per_device_train_batch_size=32 // processes,
                                  **({"accelerator_config": accelerator} if accelerator else {}))
        raw = yaml.safe_load(Path(config.source).read_text())
        raw["model"].update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        raw["tokenizer"] = {"path": str(tokenizer_dir)}
        Path(config.source).write_text(yaml.safe_dump(raw))
        output_dir = tmp_path / name / "run"
        if processes == 1:
            run_recipe(load_run_config(config.source), output_dir)
        else:
            torchrun("../scripts/train.py", "--config", str(config.source), "--output_dir", str(output_dir))
        results = json.loads((output_dir / "eval_results.json").read_text())
        assert results["training"]["processes"] == processes and results["training"]["global_step"] == 6
        outcomes[name] = (results["training"]["train_loss"], results["heldout"]["model"]["average"]["p@1"])
    assert outcomes["dispatched"] == outcomes["one"] and outcomes["each_reads"] == outcomes["one"], outcomes
