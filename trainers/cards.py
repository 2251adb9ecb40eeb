"""Model cards rendered from `hub_cards/` templates with measured results in their `model-index`."""

from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATES = Path(__file__).resolve().parent.parent / "hub_cards"


def retrieval_eval_results(results: dict, dataset_name: str, dataset_type: str) -> list[EvalResult]:
    """One `model-index` entry per language pair and one for the average, metric `p@1` in percent."""
    entries = []
    for name, row in results.items():
        entries.append(
            EvalResult(
                task_type="sentence-similarity",
                task_name="Translation retrieval",
                dataset_type=dataset_type,
                dataset_name=dataset_name,
                dataset_config=name,
                dataset_split="heldout",
                metric_type="precision_at_1",
                metric_name=f"P@1 ({name})",
                metric_value=round(100 * row["p@1"], 2),
            )
        )
    return entries


def render_model_card(output_dir: Path, config, run_config, results: dict, dataset_name: str,
                      command: str = "accelerate launch scripts/train.py --output_dir OUTPUT_DIR") -> ModelCard:
    """Write `README.md` in `output_dir` from `hub_cards/ems.md`."""
    model, baseline = results["model"], results["tfidf_baseline"]
    rows = [
        (name, {"model": model[name]["p@1"], "baseline": baseline[name]["p@1"], "size": model[name]["size"]})
        for name in model
        if name != "average"
    ]
    card_data = ModelCardData(
        language=sorted({code.split("_")[0] for code in config.languages}),
        license="mpl-2.0",
        library_name="transformers",
        tags=["sentence-embeddings", "multilingual", "ems", "feature-extraction"],
        pipeline_tag="feature-extraction",
        model_name=Path(output_dir).name,
        eval_results=retrieval_eval_results(model, dataset_name, "libreoffice-parallel"),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(TEMPLATES / "ems.md"),
        model_name=Path(output_dir).name,
        repo_id=Path(output_dir).name,
        config=config,
        languages=config.languages,
        eval_description=(
            f"Translation retrieval P@1 (Tatoeba protocol: cosine, mean of both directions) on {dataset_name}, "
            "each language pair retrieved among its own held-out sentences."
        ),
        retrieval_rows=rows,
        average={"model": model["average"]["p@1"], "baseline": baseline["average"]["p@1"]},
        command=command.replace("OUTPUT_DIR", str(output_dir)),
        training_data=str(run_config.data.train or "the embedded LibreOffice parallel corpus (data/default, MPL-2.0)"),
        hyperparameters=yaml.safe_dump(run_config.to_dict(), sort_keys=False).strip(),
        training_summary=", ".join(f"{k}: {v}" for k, v in results.get("training", {}).items()),
    )
    card.save(Path(output_dir) / "README.md")
    return card
