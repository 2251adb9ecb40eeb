import json

import pytest
import yaml
from transformers import AutoModel

from modeling_ems import DualEncoderMultiTask
from trainers.recipes import load_run_config, run_recipe
from trainers.recipes.multitask import MultiTaskRecipe
from trainers.recipes.multitask.tasks import SHIPPED_TASK_DATA

from .conftest import write_jsonl


def tiny_config(tmp_path, small_pairs, heldout_pairs, tasks=None, model=None, suite=False, **training):
    nli = [{"premise": f"The file {i} is open.", "hypothesis": f"File {i} {'is open' if i % 3 == 0 else 'is closed'}.",
            "label": i % 3} for i in range(64)]
    raw = {
        "recipe": "multitask",
        "model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                  "max_position_embeddings": 32, "head_intermediate_size": 16, "nli_hidden_size": 16,
                  "ngram_buckets": 997, **(model or {})},
        "tokenizer": {"vocab_size": 1000},
        "tasks": tasks or {
            "translation": {"batch_size": 16},
            "response": {"source": str(tmp_path / "absent.jsonl"), "max_examples": 200},  # -> the shipped subset
            "quick_thought": {"max_examples": 200},
            "nli": {"source": str(write_jsonl(tmp_path / "nli.jsonl", nli)), "batch_size": 8},
        },
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", small_pairs[:600])),
                 "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs)), "out_of_domain": "debian"},
        "training": {"per_device_train_batch_size": 8, "max_steps": 8, "learning_rate": 0.001, "logging_steps": 4,
                     "save_steps": 4, "report_to": "none", "seed": 0, "disable_tqdm": True, **training},
    }
    if suite:  # evaluation during training: retrieval on 20 held-out pairs per language at every 8 steps
        suite_file = tmp_path / "suite.yaml"
        suite_file.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_file: {raw['data']['heldout']}, "
                              "languages: model, limit: 20}\n")
        raw["evaluation"] = {"suite": str(suite_file)}
        raw["training"].update(eval_strategy="steps", eval_steps=8)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # the tasks cycle in their order
    return load_run_config(path)


@pytest.mark.slow
def test_tiny_multitask_run_cycles_tasks_saves_a_loadable_encoder_and_resumes(tmp_path, small_pairs, heldout_pairs):
    output_dir = tmp_path / "run"
    results = run_recipe(tiny_config(tmp_path, small_pairs, heldout_pairs, model={"input_type": "char_ngram"},
                                     suite=True), output_dir)
    state = json.loads((output_dir / "checkpoint-8" / "trainer_state.json").read_text())
    logged = [entry for entry in state["log_history"] if "loss" in entry]
    assert [entry["step"] for entry in logged] == [4, 8]
    assert any("eval_dev_en-de_p@1" in entry for entry in state["log_history"] if entry["step"] == 8)
    for entry in logged:  # one step of each task per cycle, each task's loss logged
        assert {"translation_loss", "response_loss", "quick_thought_loss", "nli_loss"} <= set(entry)
    # each task's own batch, once, in the first log and on the card; NLI ranks nothing
    figures = {"translation_global_batch": 16, "translation_in_batch_candidates": 16, "response_global_batch": 8,
               "response_in_batch_candidates": 8, "quick_thought_global_batch": 8,
               "quick_thought_in_batch_candidates": 8, "nli_global_batch": 8}
    assert {key: logged[0].get(key) for key in figures} == figures and not set(figures) & set(logged[1])
    assert "nli_in_batch_candidates" not in logged[0]
    assert {key: results["training"][key] for key in figures} == figures
    assert results["data"]["response"]["source"] == str(SHIPPED_TASK_DATA / "chatterbot.jsonl.gz")
    assert results["data"]["quick_thought"]["examples"] <= 200
    assert set(results) >= {"heldout", "out_of_domain", "data", "training"}
    assert "tfidf_baseline" in results["heldout"] and "average" in results["out_of_domain"]["model"]
    card = (output_dir / "README.md").read_text()
    assert "translation_in_batch_candidates: 16" in card
    assert "multi-task dual-encoder" in card and "quick_thought" in card and "character 3- and 4-gram" in card
    model = AutoModel.from_pretrained(output_dir)
    assert type(model) is DualEncoderMultiTask and model.config.input_type == "char_ngram"
    assert int(model.get_input_embeddings().ngram_table.min()) < model.config.ngram_buckets  # the table came along
    # the same command with more steps resumes from checkpoint-8
    resumed = run_recipe(tiny_config(tmp_path, small_pairs, heldout_pairs, model={"input_type": "char_ngram"},
                                     suite=True, max_steps=12), output_dir)
    assert resumed["training"]["global_step"] == 12
    history = json.loads((output_dir / "checkpoint-12" / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [4, 8, 12]


def test_a_config_whose_tasks_the_model_has_no_head_for_is_refused(tmp_path, small_pairs, heldout_pairs):
    run_config = tiny_config(tmp_path, small_pairs, heldout_pairs, model={"tasks": ["translation", "response"]})
    with pytest.raises(ValueError, match=r"no head for the tasks \['quick_thought', 'nli'\]"):
        run_recipe(run_config, tmp_path / "run")


@pytest.mark.parametrize("tasks, message", [
    ({"translation": {}, "paraphrase": {}}, r"unknown tasks \['paraphrase'\]"),
    ({"response": {}}, "the tasks need translation"),
    ({"translation": {"source": "x.jsonl"}}, "translation pairs come from data.train"),
    ({"translation": {}, "response": {"hard_negatives": 2}}, "hard negatives are for translation ranking only"),
    ({"translation": {}, "response": {"sources": "x"}}, r"unknown settings \['sources'\]"),
    ({"translation": {}, "nli": {}}, "ships no nli data"),
    ({"translation": {"one_language_per_batch": True}}, r"only monolingual tasks \(\['response', 'quick_thought'\]\)"),
])
def test_bad_tasks_sections_are_refused(tmp_path, small_pairs, heldout_pairs, tasks, message):
    with pytest.raises(ValueError, match=message):
        run_recipe(tiny_config(tmp_path, small_pairs, heldout_pairs, tasks=tasks), tmp_path / "run")


def test_the_shipped_default_config_parses_and_a_task_setting_can_be_overridden():
    run_config = load_run_config("multitask_default", ["tasks.translation.hard_negatives=5",
                                                       "tasks.nli.source=snli.jsonl"])
    recipe = MultiTaskRecipe(run_config, "unused")
    assert list(recipe.tasks) == ["translation", "response", "quick_thought", "nli"]
    assert recipe.tasks["translation"].hard_negatives == 5 and recipe.tasks["translation"].batch_size == 128
    assert recipe.tasks["nli"].source == "snli.jsonl"
    assert [s.one_language_per_batch for s in recipe.tasks.values()] == [False, True, True, False]
