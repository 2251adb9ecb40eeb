"""The tasks of the multi-task dual encoder (Chidambaram et al., sec. 2.2), each defined once in `TASKS`: its text
columns (in the order of the model's sides, `TASK_SIDES`), its data loader, its loss and the data the package ships
for it. The model's side of a task (its rows and heads) is `modeling_ems`'s, which ships without this package.

Each task's data is a `datasets.Dataset` with the text columns its collator reads:

* translation: parallel pairs (`load_parallel_dataset`), with an optional `negatives` column of K hard negatives
  (`trainers.hard_negatives`);
* response: conversational (input, response) turns, e.g. chatterbot's `{"lang", "input", "response"}` lines;
* quick_thought: (previous, current, next) sentences of documents, `{"document", "sentences": [...]}` pages;
* nli: (premise, hypothesis, label) with labels 0 entailment, 1 neutral, 2 contradiction (SNLI's layout).

Sources are local files (JSONL / TSV / CSV / Parquet, optionally gzipped), folders of them, shipped files, or Hub
dataset names, as everywhere in the package.
"""

from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

import datasets
import torch

from modeling_ems.configuration_dual_encoder import TASKS as MODEL_TASKS
from modeling_ems.modeling_dual_encoder import TASK_SIDES

from ...data import _local_builder, load_parallel_dataset, read_data_file, validate_pairs
from ...losses import matryoshka_loss, nli_loss, ranking_loss

NLI_LABELS = (0, 1, 2)  # entailment, neutral, contradiction
LANGUAGE = "lang"  # the column of a monolingual task's rows that holds their language
# Small subsets shipped with the package for training without ../shared/data (see their NOTICE files).
SHIPPED_TASK_DATA = Path(str(files("trainers.data") / "multitask"))


def load_rows(source: str | Path, split: str = "train") -> datasets.Dataset:
    """Every column of a local file, of all data files of a folder (one format), or of a Hub dataset."""
    path = Path(source)
    if not path.exists() and not path.is_absolute() and (SHIPPED_TASK_DATA.parent / path).exists():
        path = SHIPPED_TASK_DATA.parent / path
    if path.is_dir():
        data_files = sorted(str(p) for p in path.iterdir() if p.is_file() and not p.name.upper().startswith(
            ("NOTICE", "README", "LICENSE")))
        if not data_files:
            raise ValueError(f"{source} holds no data files.")
        builder, options = _local_builder(Path(data_files[0]))
        return datasets.load_dataset(builder, data_files=data_files, split="train", **options)
    if path.is_file():
        return read_data_file(path)
    if path.suffix or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such data file or folder: {str(source)!r}.")
    return datasets.load_dataset(str(source), split=split)


def _require_columns(rows: datasets.Dataset, columns, task: str, source) -> None:
    missing = sorted(set(columns) - set(rows.column_names))
    if missing:
        raise ValueError(f"{source} has columns {sorted(rows.column_names)}; {task} data needs {list(columns)} "
                         f"(missing {missing}).")


def _check_texts(rows: datasets.Dataset, columns, task: str, source) -> None:
    for column in columns:
        for index, value in enumerate(rows[column]):
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"{source}, row {index}: {task} column {column!r} is {value!r}; every example needs "
                                 "non-empty texts. Remove or fix that row.")


def _nonempty(rows: datasets.Dataset, task: str, source) -> datasets.Dataset:
    if len(rows) == 0:
        raise ValueError(f"The {task} task has no data: {source} gave no examples (after the language filter). "
                         f"Point tasks.{task}.source at data, or drop {task} from the tasks.")
    return rows


def _keep_languages(rows: datasets.Dataset, languages, column: str = "lang") -> datasets.Dataset:
    if languages is None or column not in rows.column_names:
        return rows
    known = set(languages)
    return rows.filter(lambda row: row[column] in known)


def translation_task(source, max_examples: int | None = None, hard_negatives: int = 0) -> datasets.Dataset:
    """Parallel pairs; with `hard_negatives` K > 0, the source must hold a `negatives` column of at least K texts
    per pair (as `scripts/mine_hard_negatives.py` writes), of which the first K are kept."""
    if not hard_negatives:
        pairs = load_parallel_dataset(source)
    else:
        pairs = load_rows(source)
        _require_columns(pairs, ("src", "tgt", "src_lang", "tgt_lang", "negatives"), "translation (hard negatives)",
                         source)
        short = [i for i, negatives in enumerate(pairs["negatives"]) if len(negatives) < hard_negatives]
        if short:
            raise ValueError(f"{source}: {len(short)} pairs (first: row {short[0]}) have fewer than hard_negatives="
                             f"{hard_negatives} negatives; mine more (--k) or lower hard_negatives.")
        pairs = pairs.map(lambda row: {"negatives": row["negatives"][:hard_negatives]})
    if max_examples is not None:
        pairs = pairs.select(range(min(max_examples, len(pairs))))
    _nonempty(pairs, "translation", source)
    validate_pairs(pairs, name=str(source))
    for index, negatives in enumerate(pairs["negatives"] if hard_negatives else []):
        if not all(isinstance(text, str) and text.strip() for text in negatives):
            raise ValueError(f"{source}, row {index}: a hard negative is empty or missing ({negatives!r}).")
    return pairs


def response_task(source, languages=None, max_examples: int | None = None) -> datasets.Dataset:
    """(input, response) turns; rows with a `lang` outside `languages` are dropped when `languages` is given."""
    rows = load_rows(source)
    _require_columns(rows, TASKS["response"].columns, "response", source)
    rows = _keep_languages(rows, languages)
    if max_examples is not None:
        rows = rows.select(range(min(max_examples, len(rows))))
    _nonempty(rows, "response", source)
    _check_texts(rows, TASKS["response"].columns, "response", source)
    return rows.select_columns(list(TASKS["response"].columns) + [LANGUAGE] * (LANGUAGE in rows.column_names))


def quick_thought_triples(documents: datasets.Dataset, source) -> datasets.Dataset:
    """(previous, current, next) for every sentence of every document that has both neighbours (sec. 2.2). A
    document without sentences, or with an empty sentence, is an error naming it: it cannot be split into
    consecutive sentences."""
    _require_columns(documents, ("document", "sentences"), "quick_thought", source)
    for index, (name, sentences) in enumerate(zip(documents["document"], documents["sentences"])):
        if not sentences:
            raise ValueError(f"{source}, document {index} ({name!r}) has no sentences; drop it or fill it.")
        for position, sentence in enumerate(sentences):
            if not isinstance(sentence, str) or not sentence.strip():
                raise ValueError(f"{source}, document {index} ({name!r}): sentence {position} is {sentence!r}; "
                                 "quick-thought needs non-empty consecutive sentences.")

    def windows(batch):
        triples = [window for sentences in batch["sentences"] for window in zip(sentences, sentences[1:],
                                                                                  sentences[2:])]
        columns = {"previous": [t[0] for t in triples], "current": [t[1] for t in triples],
                   "next": [t[2] for t in triples]}
        if LANGUAGE in batch:  # each triple keeps its document's language
            columns[LANGUAGE] = [language for sentences, language in zip(batch["sentences"], batch[LANGUAGE])
                                 for _ in range(max(len(sentences) - 2, 0))]
        return columns

    return documents.map(windows, batched=True, remove_columns=documents.column_names)


def quick_thought_task(source, languages=None, max_examples: int | None = None) -> datasets.Dataset:
    """Quick-thought triples of the documents in `source` (a pages file or a folder of `*.LANG.jsonl.gz` pages, each
    triple with its file's language as `lang`); with `languages`, a folder's files whose language suffix is not in it
    are skipped."""
    path = Path(source)
    if path.is_dir():
        suffix = lambda p: p.name.split(".")[-3 if p.suffix == ".gz" else -2]  # noqa: E731
        chosen = sorted(p for p in path.iterdir() if p.is_file() and not p.name.upper().startswith(
            ("NOTICE", "README", "LICENSE")) and (languages is None or suffix(p) in set(languages)))
        if not chosen:
            raise ValueError(f"The quick_thought task has no data: {source} has no documents"
                             f"{'' if languages is None else f' in the languages {sorted(languages)}'}.")
        documents = datasets.concatenate_datasets([load_rows(p).map(lambda row, code=suffix(p): {LANGUAGE: code})
                                                   for p in chosen])
    else:
        documents = load_rows(source)
    triples = quick_thought_triples(documents, source)
    if max_examples is not None:
        triples = triples.shuffle(seed=0).select(range(min(max_examples, len(triples))))
    return _nonempty(triples, "quick_thought", source)


def nli_task(source, max_examples: int | None = None) -> datasets.Dataset:
    """(premise, hypothesis, label) rows; a label outside {0, 1, 2} is an error naming the row (SNLI marks pairs
    without a gold label -1: filter them out first)."""
    rows = load_rows(source)
    _require_columns(rows, ("premise", "hypothesis", "label"), "nli", source)
    if max_examples is not None:
        rows = rows.select(range(min(max_examples, len(rows))))
    _nonempty(rows, "nli", source)
    for index, label in enumerate(rows["label"]):
        if isinstance(label, bool) or label not in NLI_LABELS:
            raise ValueError(f"{source}, row {index}: NLI label {label!r} is not one of {NLI_LABELS} (entailment, "
                             "neutral, contradiction); map or drop it (SNLI's -1 means no gold label).")
    _check_texts(rows, TASKS["nli"].columns, "nli", source)
    return rows.select_columns(["premise", "hypothesis", "label"])


Rank = Callable[..., torch.Tensor]  # (query side, candidate side, negatives side=None) -> mean ranking loss (eq. 2)


@dataclass(frozen=True)
class Task:
    """One task: what its data holds, where it comes from and what it is trained with.

    Args:
        name: the task's name in configs and in the model (`DualEncoderMultiTaskConfig.tasks`).
        columns: the text columns of its data, in the order of the model's sides (`TASK_SIDES[name]`).
        loss: `(outputs, labels, rank) -> loss` from the model's outputs (`logits`), with `rank(query, candidate,
            negatives=None)` the ranking loss in the model's similarity between sides of the task, named by their
            position in `TASK_SIDES[name]` (their `task_embeddings` and text ids).
        load: `(source, languages, max_examples) -> dataset`; None for translation, whose pairs are the recipe's
            training data (`data.train`).
        label_column: a column of class labels the collator passes as `labels`.
        shipped: the subset the package ships, trained on when no source is given.
        hard_negatives: whether the task takes mined negatives (`tasks.<name>.hard_negatives`).
        monolingual: whether each example is in one language (its `lang`), so that its batches can be drawn one
            language at a time (`tasks.<name>.one_language_per_batch`).
    """

    name: str
    columns: tuple[str, ...]
    loss: Callable[[object, torch.Tensor | None, Rank], torch.Tensor]
    load: Callable[..., datasets.Dataset] | None = None
    label_column: str | None = None
    shipped: Path | None = None
    hard_negatives: bool = False
    monolingual: bool = False


def _nli_loss(outputs, labels, rank):
    if labels is None:
        raise ValueError("An nli batch needs `labels` (0 entailment, 1 neutral, 2 contradiction).")
    return nli_loss(outputs.logits, labels)  # 3-way cross-entropy


TASKS: dict[str, Task] = {task.name: task for task in (
    # -log P~(t_i | s_i) (eq. 2), g on both sides, the hard negatives (side 2, when mined) among the candidates
    Task("translation", ("src", "tgt"), hard_negatives=True,
         loss=lambda outputs, labels, rank: rank(0, 1, negatives=2)),
    # -log P~(response | input) (eq. 2), the response side through its head
    Task("response", ("input", "response"), shipped=SHIPPED_TASK_DATA / "chatterbot.jsonl.gz", monolingual=True,
         load=lambda source, languages, max_examples: response_task(source, languages, max_examples),
         loss=lambda outputs, labels, rank: rank(0, 1)),
    # -log P~(next | current) - log P~(previous | current) (eq. 2 twice, each side its own head)
    Task("quick_thought", ("previous", "current", "next"), shipped=SHIPPED_TASK_DATA / "documents", monolingual=True,
         load=lambda source, languages, max_examples: quick_thought_task(source, languages, max_examples),
         loss=lambda outputs, labels, rank: rank(1, 2) + rank(1, 0)),
    Task("nli", ("premise", "hypothesis"), label_column="label", loss=_nli_loss,
         load=lambda source, languages, max_examples: nli_task(source, max_examples)),
)}
if set(TASKS) != set(MODEL_TASKS) or any(len(task.columns) != len(TASK_SIDES[name]) for name, task in TASKS.items()):
    raise ImportError("trainers' multi-task TASKS and modeling_ems's TASKS / TASK_SIDES disagree; keep them in step.")


def task_loss(task: str, outputs, labels: torch.Tensor | None = None, similarity: str = "dot",
              temperature: float = 1.0, text_ids: torch.Tensor | None = None, matryoshka_dims=None,
              matryoshka_weights=None) -> torch.Tensor:
    """The loss of one task batch (`TASKS[task].loss`), from `DualEncoderMultiTaskForPreTraining`'s outputs
    (sec. 2.2). Ranking losses are means over the local examples, with in-batch candidates gathered across
    processes; with `text_ids` (one per row of the batch, as `SidesCollator` gives them), candidates whose text
    equals the right one's (or that answer an equal query) are masked out as false negatives. With
    `matryoshka_dims`, each ranking loss is taken on the leading d dimensions of every side for each d and summed
    with `matryoshka_weights` (`matryoshka_loss`); the NLI classifier reads the whole embeddings."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; tasks: {', '.join(TASKS)}.")
    def rank(query: int, candidate: int, negatives: int | None = None) -> torch.Tensor:
        embeddings = outputs.task_embeddings
        ids = [None] * len(embeddings) if text_ids is None else text_ids.split([len(side) for side in embeddings])
        if negatives is not None and not len(embeddings[negatives]):  # no hard negatives mined
            negatives = None
        return matryoshka_loss(  # eq. 2 on the leading d dims of each side, for each Matryoshka d
            lambda queries, candidates, hard: ranking_loss(
                queries, candidates, hard, similarity=similarity, temperature=temperature, query_ids=ids[query],
                candidate_ids=ids[candidate], negative_ids=None if negatives is None else ids[negatives]).mean(),
            [embeddings[query], embeddings[candidate], None if negatives is None else embeddings[negatives]],
            matryoshka_dims, matryoshka_weights)

    return TASKS[task].loss(outputs, labels, rank)


__all__ = ["LANGUAGE", "NLI_LABELS", "SHIPPED_TASK_DATA", "TASKS", "Task", "load_rows", "nli_task",
           "quick_thought_task", "quick_thought_triples", "response_task", "task_loss", "translation_task"]
