"""The house: the layering of the package's imports (`scripts/import_graph.py`), and a recipe of the user's own,
defined outside the package, run through the command line like a shipped one."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModel

from .conftest import write_jsonl

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("import_graph", ROOT / "scripts" / "import_graph.py")
import_graph = importlib.util.module_from_spec(spec)
spec.loader.exec_module(import_graph)


def test_imports_keep_the_layering_and_have_no_cycle():
    graph = import_graph.import_graph()
    assert "trainers.recipes.ems.recipe" in graph and "trainers.recipes.base" in graph["trainers.recipes.ems.recipe"]
    assert import_graph.violations(graph) == []


@pytest.mark.parametrize("source, target, why", [
    ("trainers.recipes.ema_alignment.recipe", "trainers.compare", "layer 5"),  # a method up into the comparison tool
    ("trainers.losses", "trainers.collators", "layer 2 (trainers.losses) imports from layer 2 (trainers.collators)"),
    ("trainers.recipes.multitask.recipe", "trainers.recipes.ems.recipe", "trainers.recipes.ems"),  # method -> method
    ("trainers.config", "trainers.recipes", "layer 1"),  # the old circle's first step
    ("modeling_ems.layers", "trainers.encoding", "ships alone"),
])
def test_the_checker_catches_each_kind_of_bad_import(source, target, why):
    graph = import_graph.import_graph()
    graph[source] = graph[source] | {target}
    problems = import_graph.violations(graph)
    assert any(p.startswith(f"{source} -> {target}") and why in p for p in problems), problems


def test_the_checker_catches_a_cycle():
    graph = {"trainers.data": {"trainers.config"}, "trainers.config": {"trainers.data"}}
    assert any(p.startswith("cycle: ") for p in import_graph.violations(graph))


MY_RECIPE = '''
"""A fifth method from outside the package: mean-pooled BERT-style encoder, contrastive loss only."""
from dataclasses import dataclass

from transformers import BertConfig, BertModel, Trainer

from trainers.arguments import PairTrainingArguments
from trainers.collators import ParallelPairCollator
from trainers.layout import PairLayout
from trainers.losses import contrastive_loss
from trainers.recipes import ScratchEncoderRecipe, TokenizerSettings
from trainers.encoding import sentence_embeddings


class ContrastiveTrainer(Trainer):
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        embeddings = sentence_embeddings(model, inputs, "mean")
        loss = contrastive_loss(*PairLayout.split(embeddings), temperature=0.1).mean()
        return (loss, None) if return_outputs else loss


class MyRecipe(ScratchEncoderRecipe):
    name = "my_contrastive"
    sections = {"model": dict, "tokenizer": TokenizerSettings}
    arguments_class = PairTrainingArguments
    example_config = "my.yaml"
    config_class = BertConfig
    card_template = __file__.replace("my_recipe.py", "my_card.md")

    def build_model(self, tokenizer):
        config = BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, **self.run_config.model)
        config.languages = sorted(self.data_report["train"]["languages"])
        return BertModel(config)

    def load_data(self):
        train, evaluation = super().load_data()
        self.data_report["train"]["languages"] = sorted(set(train["src_lang"]) | set(train["tgt_lang"]))
        return train, evaluation

    def make_trainer(self, model, args, train, tokenizer):
        return ContrastiveTrainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                                  data_collator=ParallelPairCollator(tokenizer, model.config.max_position_embeddings))
'''


@pytest.mark.slow
def test_a_recipe_from_outside_the_package_runs_through_the_command_line(tmp_path, small_pairs, heldout_pairs):
    plugin = tmp_path / "plugins"
    plugin.mkdir()
    (plugin / "my_recipe.py").write_text(MY_RECIPE)
    (plugin / "my_card.md").write_text("---\n{{ card_data }}\n---\n\n# {{ model_name }}\n\nMy method: "
                                       "{{ config.hidden_size }}-d, trained with `{{ command }}`.\n")
    config = {
        "recipe": "my_recipe:MyRecipe",
        "model": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64,
                  "max_position_embeddings": 32},
        "tokenizer": {"vocab_size": 800},
        "data": {"train": str(write_jsonl(tmp_path / "train.jsonl", small_pairs[:400])),
                 "heldout": str(write_jsonl(tmp_path / "heldout.jsonl", heldout_pairs[:80])),
                 "out_of_domain": "debian", "max_train_pairs": 400},
        "training": {"per_device_train_batch_size": 16, "max_steps": 4, "save_steps": 2, "learning_rate": 0.001,
                     "report_to": "none", "seed": 0, "disable_tqdm": True},
    }
    config_file = tmp_path / "my.yaml"
    config_file.write_text(json.dumps(config))
    output = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "2"}  # my_recipe: in the working directory
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(config_file),
                             "--output_dir", str(output)], capture_output=True, text=True, env=env, timeout=600,
                            cwd=plugin)
    assert result.returncode == 0, result.stderr[-4000:]
    printed = json.loads(result.stdout[result.stdout.index("{\n"):])  # the summary the command prints last
    assert set(printed) == {"heldout", "out_of_domain"}  # the encoder tier's evaluation, in and out of domain
    assert (output / "checkpoint-4" / "trainer_state.json").is_file()
    model = AutoModel.from_pretrained(output)  # a saved, loadable folder
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 32
    assert (output / "modules.json").is_file()  # the sentence-transformers files of every encoder recipe
    card = (output / "README.md").read_text()
    assert "My method: 32-d" in card and "--config" in card
    assert json.loads((output / "eval_results.json").read_text())["training"]["global_step"] == 4

    bad = tmp_path / "bad.yaml"
    bad.write_text(json.dumps({**config, "recipe": "my_recipe:NotThere"}))
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--config", str(bad),
                             "--output_dir", str(tmp_path / "bad")], capture_output=True, text=True, env=env,
                            timeout=300, cwd=plugin)
    assert result.returncode == 2 and f"my_recipe ({plugin / 'my_recipe.py'}) has no 'NotThere'" in result.stderr
