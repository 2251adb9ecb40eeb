"""Prepared data: what a training run reads, made once per job and saved in its output folder.

`ems-prepare --config C --output_dir D` (`trainers.cli.prepare`) runs the steps `scripts/train.py` runs before
training (`Recipe.prepare`): the data read and checked, the tokenizer trained on a seeded sample, and, for a recipe
that tokenizes its pairs once (`EncoderRecipe.pretokenize_length`), the folder `D/prepared/`: the training pairs with
their token ids and the evaluation sets (`Dataset.save_to_disk`) and `manifest.json`, which says what they were made
from. `scripts/train.py` with the same config and `--output_dir D` loads that folder (memory-mapped Arrow, on every
process and node that sees it) instead of preparing again; a folder made from other data, settings or tokenizer is
not used (and is replaced when the run prepares again).
"""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import datasets

from .files import write_text_atomic

logger = logging.getLogger(__name__)

PREPARED_FOLDER = "prepared"
MANIFEST = "manifest.json"
# What a manifest is, so that a change of the folder's layout is seen as another preparation.
FORMAT = "ems-prepared-pairs/1"


def source_stamp(source) -> dict:
    """What identifies a data source for the manifest: a local file's or folder's size and modification time (a
    changed file is prepared again), else its name."""
    path = Path(str(source))
    if not path.exists():
        return {"source": str(source)}
    files = sorted(p for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    return {"source": str(source), "bytes": sum(p.stat().st_size for p in files),
            "modified_ns": max((p.stat().st_mtime_ns for p in files), default=0)}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (the tokenizer's `tokenizer.json`), or the name of what is not a local file."""
    path = Path(path)
    if not path.is_file():
        return str(path)
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_prepared(output_dir: str | Path, key: dict) -> tuple[datasets.Dataset, dict, dict] | None:
    """`(train, evaluation sets, data report)` from `output_dir/prepared` when its manifest was made with `key`,
    else None (a folder made from something else is said in the log)."""
    folder = Path(output_dir) / PREPARED_FOLDER
    manifest_file = folder / MANIFEST
    if not manifest_file.is_file():
        return None
    manifest = json.loads(manifest_file.read_text())
    if manifest.get("key") != {"format": FORMAT, **key}:
        logger.warning("Not using %s: it was prepared from other data, settings or tokenizer; preparing again.",
                       folder)
        return None
    evaluation = {name: datasets.load_from_disk(str(folder / name)) for name in manifest["evaluation"]}
    return datasets.load_from_disk(str(folder / "train")), evaluation, manifest["report"]


def save_prepared(output_dir: str | Path, key: dict, train: datasets.Dataset, evaluation: dict[str, datasets.Dataset],
                  report: dict) -> Path:
    """Save what `load_prepared` reads to `output_dir/prepared`: written beside it first and moved into place, the
    manifest last, so that a run cut short never leaves a folder that looks complete."""
    folder = Path(output_dir) / PREPARED_FOLDER
    partial = folder.with_name(f"{PREPARED_FOLDER}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    train.save_to_disk(str(partial / "train"))
    for name, pairs in evaluation.items():
        pairs.save_to_disk(str(partial / name))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    write_text_atomic(folder / MANIFEST, json.dumps({"key": {"format": FORMAT, **key},
                                                     "evaluation": sorted(evaluation), "report": report}, indent=2))
    return folder
