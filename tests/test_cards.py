import re
import subprocess
import sys

from huggingface_hub import ModelCard

import pytest

from trainers.config import load_run_config
from trainers.recipes.ems import EMSRecipe


def fake_results(languages):
    model = {f"en-{code}": {"p@1": 0.5 + i / 100, "size": 100} for i, code in enumerate(languages)}
    model["average"] = {"p@1": 0.55}
    baseline = {name: {"p@1": 0.25, "size": 100} for name in model}
    return {"model": model, "tfidf_baseline": baseline, "training": {"global_step": 10}}


def write_ems_card(folder, model, results):
    """The EMS recipe's card for `model` saved in `folder`, with the shipped default config."""
    EMSRecipe(load_run_config("configs/ems_default.yaml"), folder).card(model, results)


def test_card_renders_measured_results_and_round_trips(saved_model):
    folder, model, _ = saved_model
    results = fake_results([c for c in model.config.languages if c != "en"])
    write_ems_card(folder, model, results)
    card = ModelCard.load(folder / "README.md")
    data = card.data.to_dict()
    assert data["license"] == "mpl-2.0" and data["library_name"] == "transformers"
    assert set(data["language"]) == {"de", "en", "fr", "ja", "ru"}
    (index,) = data["model-index"]
    values = {r["dataset"]["config"]: r["metrics"][0]["value"] for r in index["results"]}
    assert values["en-de"] == 0.5 and values["average"] == 0.55
    assert "| en-fr | 51.0 | 25.0 | 100 |" in card.text
    reloaded = ModelCard(str(card))
    assert reloaded.data.to_dict() == data


def test_card_usage_snippets_really_run(saved_model, tmp_path):
    folder, model, _ = saved_model
    write_ems_card(folder, model, fake_results([c for c in model.config.languages if c != "en"]))
    text = (folder / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(snippets) == 2
    for snippet in snippets:
        code = snippet.replace(f'"{folder.name}"', repr(str(folder)))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "tensor" in result.stdout


def test_each_model_type_picks_its_own_template():
    from hub_cards import template

    assert template("ems").name == "ems.md"
    with pytest.raises(ValueError, match="No model-card template for model_type 'bert'.*'ems'"):
        template("bert")
