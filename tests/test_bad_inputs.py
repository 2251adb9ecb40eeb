"""The bad-input contract, one table: each bad input stops the run before any work with one paragraph that names the
place (file and line, or section.key) and the fix, and nothing is written or overwritten. The remote-code cases are
in tests/test_remote_code.py."""

import subprocess
import sys
from pathlib import Path

import pytest

from trainers.recipes import load_run_config
from trainers.recipes.ems import EMSRecipe

ROOT = Path(__file__).resolve().parents[1]
HEADER = "src\ttgt\tsrc_lang\ttgt_lang\n"


@pytest.mark.parametrize("override, message", [
    # a typo in the model section: refused with the closest field, not stored beside the default it left in place
    ("model.hiden_size=64", "model section of .*: unknown setting 'hiden_size'; did you mean 'hidden_size'\\?"),
    ("training.lerning_rate=0.1", "training section of .*: unknown setting 'lerning_rate'; did you mean "
                                  "'learning_rate'\\?"),
    ("training.max_steps=0", "max_steps=0 makes no sense; use a number of steps >= 1, or -1"),
    ("training.learning_rate=-0.001", "learning_rate=-0.001 makes no sense; use a positive rate"),
    ("training.per_device_train_batch_size=0", "per_device_train_batch_size=0 makes no sense"),
    ("training.learning_rate=fast", "learning_rate='fast' is not a number"),
    ("training.max_steps=true", "max_steps=True is not a number"),
    ("training.disable_tqdm=7", "disable_tqdm=7 is not true or false"),
    ("data.max_train_pairs=-5", "data.max_train_pairs=-5: use a number of pairs >= 1, or null"),
    # an evaluation suite that cannot run: found before the tokenizer is trained, not when training starts
    ("evaluation.suite=no_such_suite.yaml", "Config file 'no_such_suite.yaml' does not exist"),
    ("evaluation.suite=eval_shared_typo", "Config file 'eval_shared_typo' does not exist"),
])
def test_bad_settings_stop_before_any_work_naming_the_setting(tmp_path, override, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        EMSRecipe(load_run_config("ems_default", [override]), tmp_path / "out").run()
    assert not (tmp_path / "out").exists()  # nothing written: no tokenizer trained, no folder made


def test_the_command_ends_a_bad_input_with_one_paragraph_and_shows_the_traceback_only_when_asked(tmp_path):
    train = [sys.executable, "scripts/train.py", "--output_dir", str(tmp_path / "out"), "--set", "model.hiden_size=8"]
    result = subprocess.run(train, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: model section of configs/ems_default.yaml (EMSConfig fields): unknown "
                                    "setting 'hiden_size'; did you mean 'hidden_size'?")
    assert not (tmp_path / "out").exists()
    result = subprocess.run([*train, "--debug"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1 and "Traceback" in result.stderr and "ValueError: model section" in result.stderr


def test_a_suite_task_that_cannot_run_stops_the_run_before_any_work(tmp_path):
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks: {dev: {type: retrieval, pairs_file: missing.jsonl, languages: model}}\n")
    with pytest.raises(FileNotFoundError, match="suite.yaml: task 'dev' \\(retrieval\\): No such data file"):
        EMSRecipe(load_run_config("ems_default", [f"evaluation.suite={suite}"]), tmp_path / "out").run()
    assert not (tmp_path / "out").exists()


def test_a_yaml_syntax_error_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("recipe: ems\nmodel: {hidden_size: 64\n")
    with pytest.raises(ValueError, match=f"^{path}, line 3, column 1 is not valid YAML: while parsing a flow mapping; "
                                         "expected ',' or '}', but got '<stream end>'.$"):
        load_run_config(path)


# Data files as a user gets them wrong: (name, bytes, expected error).
BAD_FILES = [
    ("empty.tsv", b"", r"empty.tsv: the file is empty\."),
    ("header_only.tsv", HEADER.encode(), r"header_only.tsv: it holds a header but no rows\."),
    ("latin1.tsv", (HEADER + "Caf\xe9\tcaf\xe9\ten\tfr\n").encode("latin-1"),
     r"latin1.tsv: line 2 is not UTF-8 \(invalid continuation byte at byte 3 of the line\); save the file as UTF-8"),
    ("empty_text.tsv", (HEADER + "Open\tÖffnen\ten\tde\nSave\t \ten\tde\n").encode(),
     r"empty_text.tsv, line 3: column 'tgt' is ' '; every pair needs two non-empty texts"),
    ("upper_case.tsv", (HEADER + "Open\tÖffnen\ten\tde\nSave\tSpeichern\ten\tDE\n").encode(),
     r"upper_case.tsv, line 3: column 'tgt_lang': 'DE' is not a language code .*did you mean 'de'\?"),
    ("unknown_language.tsv", (HEADER + "Open\tÖffnen\ten\txx\n").encode(),
     r"unknown_language.tsv, line 2: column 'tgt_lang': 'xx' is no ISO 639-1 language"),
    ("columns.tsv", b"en\tde\nOpen\t\xc3\x96ffnen\n",
     r"columns.tsv has columns \['de', 'en'\]; parallel data needs \['src', 'tgt', 'src_lang', 'tgt_lang'\]"),
]


@pytest.mark.parametrize("name, content, message", BAD_FILES, ids=[row[0] for row in BAD_FILES])
def test_a_bad_data_file_is_named_with_its_line_before_any_work(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    config = load_run_config("ems_default", [f"data.train={tmp_path / name}"])
    with pytest.raises(ValueError, match=message):
        EMSRecipe(config, tmp_path / "out").run()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("existing", ["README.md", "config.json"])
def test_a_folder_of_other_files_is_not_written_over_unless_asked(tmp_path, existing):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / existing).write_text("the user's own")
    recipe = EMSRecipe(load_run_config("ems_default"), folder)
    with pytest.raises(ValueError, match=rf"mine holds files that are not a run of this package \({existing}\), "
                                         r"which this run would write over\. .*--overwrite_output_dir"):
        recipe.run()
    assert sorted(p.name for p in folder.iterdir()) == [existing]
    assert (folder / existing).read_text() == "the user's own"
    recipe.check_earlier_run(resume=True, overwrite_output_dir=True)  # asked: allowed


def test_a_comparison_into_a_folder_that_holds_one_is_refused_unless_asked(tmp_path, capsys):
    from trainers import cli

    (tmp_path / "results.json").write_text("the earlier comparison")
    with pytest.raises(SystemExit) as stop:
        cli.compare(["--models", "tfidf", "--output_dir", str(tmp_path)])
    assert stop.value.code == 2
    assert "holds a comparison already (results.json); choose another folder, or pass --overwrite_output_dir" in (
        capsys.readouterr().err)
    assert (tmp_path / "results.json").read_text() == "the earlier comparison"
