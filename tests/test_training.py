import json
import os
import subprocess
import sys

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModel, AutoTokenizer

from modeling_ems import EMSForPreTraining
from trainers.encoding import encode
from trainers.evaluation.retrieval import retrieval_by_language
from trainers.recipes import load_run_config, run_recipe
from trainers.recipes.ems import EMSRecipe

from .conftest import write_jsonl

TINY = {
    "recipe": "ems",
    "model": {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 256,
              "max_position_embeddings": 48, "language_embedding_size": 16, "contrastive_projection_size": 32,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    "tokenizer": {"vocab_size": 4000},
    "training": {"per_device_train_batch_size": 64, "max_steps": 300, "learning_rate": 0.002, "warmup_steps": 10,
                 "logging_steps": 20, "save_steps": 50, "save_total_limit": 2, "report_to": "none", "seed": 0,
                 "train_sampling_strategy": "group_by_length", "disable_tqdm": True},
}


def tiny_run_config(tmp_path, small_pairs, heldout_pairs, **training):
    raw = json.loads(json.dumps(TINY))
    raw["training"].update(training)
    raw["data"] = {"train": str(write_jsonl(tmp_path / "train.jsonl", small_pairs)),
                   "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs)), "out_of_domain": "debian"}
    suite = tmp_path / "suite.yaml"  # evaluation during training: retrieval on 30 held-out pairs per language
    suite.write_text(f"tasks:\n  dev: {{type: retrieval, pairs_file: {raw['data']['heldout']}, languages: model, "
                     "limit: 30}\n")
    raw["evaluation"] = {"suite": str(suite)}
    raw["training"] = {"eval_strategy": "steps", "eval_steps": 100, **raw["training"]}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_run_config(path)


def log_history(output_dir):
    (checkpoint,) = sorted(output_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1:]
    return json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]


@pytest.mark.slow
def test_tiny_training_run_learns_retrieval_and_resumes(tmp_path, small_pairs, heldout_pairs):
    output_dir = tmp_path / "run"
    run_config = tiny_run_config(tmp_path, small_pairs, heldout_pairs)

    run_recipe(tiny_run_config(tmp_path, small_pairs, heldout_pairs, max_steps=100), output_dir)
    assert (output_dir / "checkpoint-100").is_dir()
    torch.manual_seed(0)
    untrained = EMSRecipe(run_config, output_dir).build_model(AutoTokenizer.from_pretrained(output_dir)).eval()
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    before = retrieval_by_language(
        heldout_pairs, lambda texts: encode(untrained, tokenizer, texts))["average"]["p@1"]

    # the same command with more steps resumes from checkpoint-100 instead of starting over
    results = run_recipe(run_config, output_dir)
    history = log_history(output_dir)
    steps = [entry["step"] for entry in history if "loss" in entry]
    assert steps == sorted(set(steps)) and steps[0] == 20 and steps[-1] == 300
    assert results["training"]["global_step"] == 300
    assert results["training"]["processes"] == 1 and results["training"]["bf16_autocast"] is False  # no bf16 set

    def mean_of(key, part):
        values = [entry[key] for entry in history if key in entry]
        return sum(values[part]) / len(values[part])

    # total loss falls, and so does each term
    assert mean_of("loss", slice(-3, None)) < 0.8 * mean_of("loss", slice(0, 3)), history
    assert mean_of("contrastive_loss", slice(-3, None)) < 0.8 * mean_of("contrastive_loss", slice(0, 3)), history
    assert mean_of("xtr_loss", slice(-3, None)) < 0.8 * mean_of("xtr_loss", slice(0, 3)), history
    assert all("xtr_loss" in e and "contrastive_loss" in e for e in history if "loss" in e)
    evaluated = [entry for entry in history if "eval_dev_en-de_p@1" in entry]
    assert [entry["step"] for entry in evaluated] == [100, 200, 300], history
    assert evaluated[-1]["eval_dev_en-de_p@1"] > evaluated[0]["eval_dev_en-de_p@1"]

    # chance is 1 / 100 (100 held-out pairs per language); an untrained encoder already gets some P@1 from the
    # words that translations share (names, numbers); training must add far more than that
    chance = 1 / 100
    after = results["heldout"]["model"]["average"]["p@1"]
    assert after > 20 * chance and after > before + 0.1, (before, after)
    # out of domain too, beside TF-IDF, on pairs none of whose texts the model trained on
    assert set(results["out_of_domain"]["model"]) == {"en-de", "en-fr", "average"}
    assert results["out_of_domain"]["tfidf_baseline"]["average"]["p@1"] > 0
    assert results["data"]["out_of_domain"] == {"source": "debian", "pairs": 1143,
                                                "removed_seen_in_training": 0}

    # the output folder is Hub-ready
    for name in ("config.json", "model.safetensors", "modeling_ems.py", "configuration_ems.py", "layers.py",
                 "tokenizer.json", "training_config.yaml", "README.md", "eval_results.json", "modules.json"):
        assert (output_dir / name).is_file(), name
    card = (output_dir / "README.md").read_text()
    assert "model-index" in card and f"{100 * after:.1f}" in card
    reloaded = AutoModel.from_pretrained(output_dir)  # the bare encoder of the trained head class
    assert type(reloaded).__name__ == "EMSModel"
    _, evaluation = EMSRecipe(run_config, output_dir).load_data()  # the held-out pairs the run scored
    reloaded_p1 = retrieval_by_language(
        evaluation["heldout"], lambda texts: encode(reloaded, tokenizer, texts))["average"]["p@1"]
    assert reloaded_p1 == pytest.approx(after)


def test_config_errors_are_clear(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("recipe: ems\nmodle: {}\n")
    with pytest.raises(ValueError, match="unknown sections \\['modle'\\]; recipe 'ems' takes"):
        load_run_config(bad)
    with pytest.raises(FileNotFoundError, match="does not exist.*shipped: .*ems_default"):
        load_run_config(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("recipe: ems\nmodel: {}\ntokenizer: {}\n")
    with pytest.raises(ValueError, match="SECTION.KEY=VALUE"):
        load_run_config(good, ["max_steps=3"])
    assert load_run_config(good, ["training.max_steps=3"]).training == {"max_steps": 3}
    with pytest.raises(ValueError, match="unexpected keyword argument 'vocab'"):
        bad.write_text("recipe: ems\nmodel: {}\ntokenizer: {vocab: 3}\n")
        load_run_config(bad)


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def test_a_used_folder_resumes_only_its_own_config_and_no_resume_starts_over_cleanly(tmp_path, small_pairs,
                                                                                     heldout_pairs):
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", small_pairs[:300])),
            "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs[:40])),
            "out_of_domain": str(write_jsonl(tmp_path / "other.jsonl", heldout_pairs[200:240]))}

    def config(learning_rate=0.002, vocab_size=1000, max_steps=4, seed=0):
        raw = json.loads(json.dumps(TINY))
        raw["model"].update(hidden_size=32, intermediate_size=64)
        raw["tokenizer"] = {"vocab_size": vocab_size}
        raw["training"].update(max_steps=max_steps, save_steps=2, learning_rate=learning_rate,
                               per_device_train_batch_size=16, seed=seed)
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump({**raw, "data": data}))
        return load_run_config(path)

    used, fresh = tmp_path / "used", tmp_path / "fresh"
    run_recipe(config(), used)
    changed = config(learning_rate=0.003, vocab_size=900)
    with pytest.raises(ValueError, match=r"holds a run of another config .*: tokenizer.vocab_size: 1000 -> 900; "
                                         r"training.learning_rate: 0.002 -> 0.003\. Run with the config"):
        run_recipe(changed, used)
    assert run_recipe(config(max_steps=6), used)["training"]["global_step"] == 6  # train further: resumed at 4

    run_recipe(changed, used, resume=False)  # starts over: a new vocabulary, no checkpoint of the old run
    run_recipe(changed, fresh)
    assert (used / "tokenizer.json").read_text() == (fresh / "tokenizer.json").read_text()
    assert sorted(p.name for p in used.glob("checkpoint-*")) == sorted(p.name for p in fresh.glob("checkpoint-*"))
    modes = {path.name: path.stat().st_mode & 0o777 for path in fresh.iterdir() if path.is_file()}
    assert modes["model.safetensors"] == modes["config.json"] == 0o666 & ~current_umask(), modes
    for name in ("README.md", "eval_results.json"):  # published: no path of this machine, relative ones instead
        text = (fresh / name).read_text()
        assert str(tmp_path) not in text and "/tmp/" not in text and "../train.jsonl" in text, name
    weights = [load_file(folder / "model.safetensors") for folder in (used, fresh)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][name], weights[1][name]) for name in weights[0])

    other_seed = tmp_path / "seed7"  # the seed is used: the same config with another seed trains other weights
    run_recipe(config(learning_rate=0.003, vocab_size=900, seed=7), other_seed)
    assert (other_seed / "tokenizer.json").read_text() == (fresh / "tokenizer.json").read_text()
    seeded = load_file(other_seed / "model.safetensors")
    assert seeded.keys() == weights[1].keys()
    assert not any(torch.equal(seeded[name], weights[1][name]) for name in weights[1] if name.endswith("q_proj.weight"))

    lean = tmp_path / "lean"  # --drop_checkpoints: the finished folder without them, nothing left half-written
    run_recipe(changed, lean, keep_checkpoints=False)
    assert not list(lean.glob("checkpoint-*")) and not list(lean.glob(".*.tmp"))
    assert (lean / "model.safetensors").read_bytes() == (fresh / "model.safetensors").read_bytes()


def test_exponent_notation_reads_as_a_float_in_files_and_overrides(tmp_path):
    """YAML 1.1 reads `1e-4` as a string (it wants `1.0e-4`); configs and `--set` read it as the number meant."""
    path = tmp_path / "config.yaml"
    path.write_text("recipe: ems\nmodel: {}\ntokenizer: {}\ntraining: {learning_rate: 1e-4, weight_decay: 1.0E-5}\n")
    config = load_run_config(path, ["training.adam_epsilon=-2E+3", "training.run_name=1e-4x", "training.seed=7"])
    assert config.training == {"learning_rate": 1e-4, "weight_decay": 1e-5, "adam_epsilon": -2000.0,
                               "run_name": "1e-4x", "seed": 7}
    assert type(config.training["seed"]) is int


def test_the_card_command_reproduces_the_run_with_its_overrides(tmp_path):
    config = load_run_config("ems_default", ["training.max_steps=3", "data.train=my pairs.tsv"])
    reproduction = EMSRecipe(config, tmp_path / "out").reproduction({"training": {"global_step": 3}})
    assert reproduction["command"] == (f"accelerate launch scripts/train.py --config configs/ems_default.yaml "
                                       f"--output_dir {tmp_path / 'out'} --set training.max_steps=3 "
                                       "--set 'data.train=my pairs.tsv'")
    assert "max_steps: 3" in reproduction["hyperparameters"] and reproduction["training_summary"] == "global_step: 3"


def test_recipe_errors_name_the_offending_value(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("recipe: telepathy\ntraining: {}\n")
    with pytest.raises(ValueError, match="names recipe 'telepathy', which does not exist; recipes: ema_alignment, ems"):
        load_run_config(path)
    path.write_text("model: {}\ntokenizer: {}\n")
    with pytest.raises(ValueError, match="names no recipe; add e.g. `recipe: ems`"):
        load_run_config(path)
    path.write_text("recipe: ems\nmodel: {hidden_size: 64}\n")
    with pytest.raises(ValueError, match="recipe 'ems' needs the sections \\['tokenizer'\\]"):
        load_run_config(path)
    path.write_text("recipe: ems\nmodel: 12\ntokenizer: {}\n")
    with pytest.raises(ValueError, match="section 'model' must be a mapping of settings, got 12"):
        load_run_config(path)


def test_shipped_configs_are_found_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("ems_default", "ems_default.yaml", "configs/ems_default.yaml"):
        config = load_run_config(name)
        assert config.recipe == "ems" and config.source == "configs/ems_default.yaml"
        assert config.model["hidden_size"] == 256 and config.tokenizer.vocab_size == 8000


def test_model_section_may_not_set_what_the_tokenizer_fixes(tmp_path, tokenizer_dir):
    path = tmp_path / "clash.yaml"
    path.write_text("recipe: ems\nmodel: {vocab_size: 10}\ntokenizer: {}\n")
    with pytest.raises(ValueError, match="vocab_size.*come from the tokenizer"):
        EMSRecipe(load_run_config(path), tmp_path).build_model(AutoTokenizer.from_pretrained(tokenizer_dir))


def test_heldout_pairs_seen_in_training_are_removed_or_refused(tmp_path, small_pairs, heldout_pairs):
    train = small_pairs[:300] + heldout_pairs[:7]  # 7 held-out pairs leak into the training data
    raw = {**TINY, "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", train)),
                            "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs[:50])),
                            "out_of_domain": "debian"}}
    path = tmp_path / "leak.yaml"
    path.write_text(yaml.safe_dump(raw))
    recipe = EMSRecipe(load_run_config(path), tmp_path)
    _, evaluation = recipe.load_data()
    assert len(evaluation["heldout"]) == 43 and recipe.data_report["heldout"]["removed_seen_in_training"] == 7
    seen = {row["src"] for row in train} | {row["tgt"] for row in train}
    assert not any(row["src"] in seen or row["tgt"] in seen for row in evaluation["heldout"])
    with pytest.raises(ValueError, match="7 of the heldout pairs .* share a text with the training data"):
        EMSRecipe(load_run_config(path, ["data.on_training_overlap=error"]), tmp_path).load_data()
    with pytest.raises(ValueError, match="on_training_overlap='keep'"):
        load_run_config(path, ["data.on_training_overlap=keep"])


def test_recipe_builds_the_head_class(tmp_path, tokenizer_dir):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**TINY, "data": {}}))
    model = EMSRecipe(load_run_config(path), tmp_path).build_model(AutoTokenizer.from_pretrained(tokenizer_dir))
    assert isinstance(model, EMSForPreTraining) and model.config.languages == ["de", "en", "fr", "ja", "ru"]


def test_nonsense_training_weights_are_rejected(tmp_path):
    from trainers.recipes.ems.trainer import EMSTrainingArguments

    with pytest.raises(ValueError, match="at least one > 0"):
        EMSTrainingArguments(output_dir=str(tmp_path), xtr_weight=0.0, contrastive_weight=0.0)


@pytest.mark.slow
def test_accelerate_launch_two_processes_trains_and_saves(tmp_path, small_pairs, heldout_pairs):
    """`accelerate launch --multi_gpu --num_processes 2` with use_cpu: real 2-process DDP on CPU (gloo)."""
    import os

    run_config = tiny_run_config(tmp_path, small_pairs[:1200], heldout_pairs[:100], max_steps=6, save_steps=3,
                                 logging_steps=3)
    config_file = tmp_path / "tiny.yaml"
    output_dir = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the vocabulary and the tokenized pairs first, in one process: no process of the run waits while one trains it
    subprocess.run([sys.executable, "scripts/prepare.py", "--config", str(config_file), "--output_dir",
                    str(output_dir)], check=True, capture_output=True, env=env, timeout=600)
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--main_process_port", "0", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
         "scripts/train.py", "--config", str(config_file), "--output_dir", str(output_dir)],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    state = json.loads((output_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    # each step takes a batch on each of the 2 processes: one epoch of 1200 pairs is 1200 // (2 * batch) steps
    batch = run_config.training["per_device_train_batch_size"]
    assert state["epoch"] == pytest.approx(6 / (1200 // (2 * batch)), rel=0.01)
    assert (output_dir / "model.safetensors").is_file() and (output_dir / "README.md").is_file()
    assert run_config.training["max_steps"] == 6


def test_bf16_auto_follows_the_hardware_and_an_explicit_choice_is_kept(tmp_path, monkeypatch, caplog):
    """`bf16: auto` turns autocast on only where bf16 matmuls are native; `true` on a machine without them is kept
    but warned about (a reference bf16 GEMM, 60x slower than fp32 on an AVX2 CPU); anything else is refused."""
    import trainers.loading as loading
    from trainers.recipes import training_arguments
    from trainers.recipes.ems.trainer import EMSTrainingArguments

    path = tmp_path / "config.yaml"
    path.write_text("recipe: ems\nmodel: {}\ntokenizer: {}\ntraining: {bf16: auto, max_steps: 1}\n")
    for native in (True, False):
        monkeypatch.setattr(loading, "native_bf16", lambda native=native: native)
        assert loading.resolve_bf16("auto") is native
        if native:  # TrainingArguments itself refuses bf16 where torch has no bf16 at all; only check the resolution
            continue
        args, _ = training_arguments(EMSTrainingArguments, load_run_config(path), tmp_path / "out")
        assert args.bf16 is False
        with caplog.at_level("WARNING"):
            assert loading.resolve_bf16(True) is True
        assert "no native bf16" in caplog.text and "auto" in caplog.text
    with pytest.raises(ValueError, match="training.bf16='yes': use true, false or auto"):
        loading.resolve_bf16("yes")


def test_the_paper_config_sets_the_gpu_step_and_tf32_auto_follows_cuda(tmp_path):
    """configs/ems_paper.yaml: bf16 and tf32 `auto`, DDP told that no parameter is unused (every parameter gets a
    gradient from eq. 12: tests/test_grad_cache.py, and DDP with find_unused_parameters=False in
    tests/distributed_grad_cache.py), batches built by dataloader workers; `tf32: auto` is off without CUDA."""
    from trainers.loading import resolve_bf16
    from trainers.recipes import training_arguments
    from trainers.recipes.ems.trainer import EMSTrainingArguments

    run_config = load_run_config("ems_paper")
    assert {key: run_config.training[key] for key in ("bf16", "tf32", "ddp_find_unused_parameters")} == {
        "bf16": "auto", "tf32": "auto", "ddp_find_unused_parameters": False}
    args, _ = training_arguments(EMSTrainingArguments, run_config, tmp_path / "out")
    assert args.bf16 is resolve_bf16("auto") and args.ddp_find_unused_parameters is False
    assert args.dataloader_num_workers >= 2
    assert args.tf32 is (True if torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8 else None)
    with pytest.raises(ValueError, match="tf32='yes': use true, false or auto"):
        EMSTrainingArguments(output_dir=str(tmp_path), tf32="yes")


def test_mini_batches_train_the_weights_of_the_whole_batch_and_log_the_batch(tmp_path, small_pairs, heldout_pairs):
    """`mini_batch_size: 4` (GradCache) through the Trainer, with gradient accumulation: 3 optimizer steps give the
    weights of the same run encoding each 16-pair batch at once (no dropout), and the first training log states
    the contrastive batch and its in-batch candidates (16 pairs on 1 process)."""
    data = {"train": str(write_jsonl(tmp_path / "train.jsonl", small_pairs[:300])),
            "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs[:40])),
            "out_of_domain": str(write_jsonl(tmp_path / "other.jsonl", heldout_pairs[200:240]))}
    weights = {}
    for mini_batch_size in (None, 4):
        raw = json.loads(json.dumps(TINY))
        raw["model"].update(hidden_size=32, intermediate_size=64)
        raw["tokenizer"] = {"vocab_size": 1000}
        raw["training"].update(max_steps=3, save_steps=3, logging_steps=1, per_device_train_batch_size=16,
                               gradient_accumulation_steps=2, mini_batch_size=mini_batch_size)
        path = tmp_path / f"config-{mini_batch_size}.yaml"
        path.write_text(yaml.safe_dump({**raw, "data": data}))
        output_dir = tmp_path / f"run-{mini_batch_size}"
        run_recipe(load_run_config(path), output_dir)
        weights[mini_batch_size] = load_file(output_dir / "model.safetensors")
        first = next(entry for entry in log_history(output_dir) if "loss" in entry)
        assert (first["global_batch_pairs"], first["in_batch_candidates"], first["mini_batch_size"]) == (
            16, 16, mini_batch_size or 16)
    for name, value in weights[None].items():
        torch.testing.assert_close(weights[4][name], value, rtol=1e-4, atol=1e-5, msg=name)
