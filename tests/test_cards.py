import re
import subprocess
import sys

from huggingface_hub import ModelCard

from trainers.cards import render_model_card
from trainers.run_config import RunConfig


def fake_results(languages):
    model = {f"en-{code}": {"p@1": 0.5 + i / 100, "size": 100} for i, code in enumerate(languages)}
    model["average"] = {"p@1": 0.55}
    baseline = {name: {"p@1": 0.25, "size": 100} for name in model}
    return {"model": model, "tfidf_baseline": baseline, "training": {"global_step": 10}}


def test_card_renders_measured_results_and_round_trips(saved_model):
    folder, model, _ = saved_model
    results = fake_results([c for c in model.config.languages if c != "en"])
    render_model_card(folder, model.config, RunConfig(source="x.yaml"), results, dataset_name="held-out pairs")
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
    render_model_card(folder, model.config, RunConfig(source="x.yaml"),
                      fake_results([c for c in model.config.languages if c != "en"]), dataset_name="held-out pairs")
    text = (folder / "README.md").read_text()
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(snippets) == 2
    for snippet in snippets:
        code = snippet.replace(f'"{folder.name}"', repr(str(folder)))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
        assert result.returncode == 0, result.stderr[-2000:]
        assert "tensor" in result.stdout
