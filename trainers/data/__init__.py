"""Parallel-sentence data: load any `datasets` source with the pair columns and check it before training.

The embedded default corpus ships inside this package (`default/`, LibreOffice, MPL-2.0: see its NOTICE), so a
wheel install trains without any data beside it."""

import bz2
import copy
import gzip
import lzma
import re
from importlib.resources import files
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.compute as pc

from ..verbosity import verbose
from .languages import language_code_problem

PAIR_COLUMNS = ("src", "tgt", "src_lang", "tgt_lang")
# The layout of ../shared/data/parallel/train.tsv.gz: English <-> `lang` pairs.
ENGLISH_PIVOT_COLUMNS = ("lang", "en", "text")
DEFAULT_CORPUS = Path(str(files(__name__) / "default"))
DEFAULT_TRAIN = DEFAULT_CORPUS / "train.jsonl.gz"
DEFAULT_HELDOUT = DEFAULT_CORPUS / "heldout.jsonl.gz"
# Out-of-domain held-out pairs: Debian package descriptions (de, fr), one `LANG.tsv` with columns `en, text` each.
DEFAULT_OUT_OF_DOMAIN = Path(str(files(__name__) / "debian"))
# How cards and reports name the data shipped with the package, by the name a config gives it.
SHIPPED_DESCRIPTIONS = {
    "default/train.jsonl.gz": "the embedded LibreOffice parallel corpus (trainers/data/default, MPL-2.0)",
    "default/heldout.jsonl.gz": "held-out pairs of the embedded LibreOffice corpus",
    "debian": "Debian package descriptions (de, fr)",
}
# A folder of `LANG.tsv` files, each with English and its translation into LANG (../shared/data/parallel/dev too).
LANGUAGE_FOLDER_COLUMNS = ("en", "text")
_LANGUAGE_CODE = re.compile(r"^[A-Za-z]{2,3}(_[A-Za-z]{2,4})?$")
# Rows per Arrow batch of a scan: the memory of a check stays flat in the corpus size.
SCAN_ROWS = 1_000_000
# A text that is only whitespace, as Python's `str.isspace` has it (\t-\r, \x1c-\x1f, \x85 and Unicode's Z*), in RE2.
_BLANK = r"^[\t-\r\x1c-\x1f\x85\p{Z}]*$"


def data_file(value: str | Path) -> Path:
    """An existing path, else the file of that name shipped in this package (e.g. `default/heldout.jsonl.gz`), so
    that configs and suites name shipped data the same way from a clone and from an installed wheel."""
    path = Path(value)
    if path.exists():
        return path
    shipped = Path(str(files(__name__))) / path
    if not path.is_absolute() and shipped.exists():
        return shipped
    raise FileNotFoundError(f"No such data file or folder: {str(value)!r} (nor shipped with the package as {shipped}).")


def describe_data(source: str | Path) -> str:
    """What a data source is, for a card: the description of shipped data, else the source as given."""
    return SHIPPED_DESCRIPTIONS.get(Path(source).as_posix(), str(source))


_BUILDERS = {
    ".tsv": ("csv", {"delimiter": "\t", "quoting": 3}),
    ".csv": ("csv", {}),
    ".jsonl": ("json", {}),
    ".json": ("json", {}),
    ".parquet": ("parquet", {}),
}


# Compressions a data file may carry, with the opener that reads it back (None: none in the standard library).
_COMPRESSIONS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open, ".zst": None}


def _format_suffix(path: Path) -> str | None:
    """The suffix that names a file's format, past its compression (`train.tsv.gz` -> `.tsv`)."""
    suffixes = [s for s in path.suffixes if s not in _COMPRESSIONS]
    return suffixes[-1] if suffixes else None


def _local_builder(path: Path) -> tuple[str, dict]:
    suffix = _format_suffix(path)
    if suffix not in _BUILDERS:
        raise ValueError(f"Cannot tell the format of {path}; use one of {', '.join(_BUILDERS)} (optionally .gz).")
    return _BUILDERS[suffix]


def read_data_file(path: Path) -> datasets.Dataset:
    """A local TSV / CSV / JSONL / Parquet file (optionally compressed) as a dataset. A file that is empty, holds a
    header but no rows, or is not UTF-8 fails naming the file (and the line), not deep inside `datasets`."""
    builder, options = _local_builder(path)
    quiet = datasets.utils.are_progress_bars_disabled() or verbose()
    if not quiet:
        datasets.disable_progress_bars()  # a local file reads in a moment: no "Generating train split" bar
    try:
        table = datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except Exception as error:  # datasets wraps every reading error alike: say which one it was
        raise ValueError(f"{path}: {_file_problem(path) or f'cannot be read as {builder} ({error})'}.") from None
    finally:
        if not quiet:
            datasets.enable_progress_bars()
    if len(table) == 0:
        raise ValueError(f"{path} has no rows (at most a header): nothing to read.")
    return table


def _file_problem(path: Path) -> str | None:
    """Why a data file cannot be read, found by reading it: empty, or a line that is not UTF-8 (None when it cannot
    tell, e.g. for a compression the standard library does not read)."""
    opener = _COMPRESSIONS.get(path.suffix, open)
    if opener is None:
        return None
    lines = 0
    with opener(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            lines += bool(line.strip())
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                return (f"line {number} is not UTF-8 ({error.reason} at byte {error.start} of the line); save the "
                        "file as UTF-8")
    if lines == 0:
        return "the file is empty"
    if lines == 1 and _local_builder(path)[0] == "csv":
        return "it holds a header but no rows"
    return None


def _language_files(folder: Path) -> dict[str, Path] | None:
    """`{code: path}` when `folder` holds only `LANG.tsv` files (a multi-parallel dev folder), else None."""
    tables = sorted(folder.glob("*.tsv"))
    others = [p for p in folder.iterdir() if p.suffix != ".tsv" and not p.name.upper().startswith(("NOTICE", "README"))]
    if not tables or others or not all(_LANGUAGE_CODE.match(p.stem) for p in tables):
        return None
    return {p.stem: p for p in tables}


def _read_language_folder(tables: dict[str, Path]) -> datasets.Dataset:
    parts = []
    for code, path in tables.items():
        table = datasets.load_dataset("csv", data_files=str(path), split="train", delimiter="\t", quoting=3)
        missing = sorted(set(LANGUAGE_FOLDER_COLUMNS) - set(table.column_names))
        if missing:
            raise ValueError(f"{path} lacks the columns {missing}; a language folder's files hold `en, text`.")
        parts.append(table.map(lambda row, code=code: {"src": row["en"], "tgt": row["text"], "src_lang": "en",
                                                        "tgt_lang": code}, remove_columns=table.column_names))
    return datasets.concatenate_datasets(parts)


def load_parallel_dataset(source: str | Path, split: str = "train", streaming: bool = False):
    """Load parallel pairs with columns `src, tgt, src_lang, tgt_lang` from a local TSV / CSV / JSONL / Parquet file,
    a folder of `LANG.tsv` files with columns `en, text` (like ../shared/data/parallel/dev), a local dataset folder,
    data shipped with the package (`default/heldout.jsonl.gz`, `debian`), or a Hub dataset name. Rows in the
    English-pivot layout `lang, en, text` are converted. With `streaming`, a `datasets.IterableDataset` read (and
    converted) as it is consumed, for corpora that do not fit on a node's disk; not a folder of `LANG.tsv` files."""
    path = Path(source)
    if not path.exists() and not path.is_absolute() and (Path(str(files(__name__))) / path).exists():
        path = Path(str(files(__name__))) / path
    if path.is_file() and streaming:
        builder, options = _local_builder(path)
        dataset = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True, **options)
    elif path.is_file():
        dataset = read_data_file(path)
    elif path.is_dir():
        tables = _language_files(path)
        if tables and streaming:
            raise ValueError(f"{source} is a folder of LANG.tsv files (evaluation data); data.streaming reads a data "
                             "file, a dataset folder or a Hub dataset: convert it to one file, or set "
                             "data.streaming: false.")
        dataset = (_read_language_folder(tables) if tables
                   else datasets.load_dataset(str(path), split=split, streaming=streaming))
    elif path.suffix or str(source).startswith((".", "/", "~")):
        raise FileNotFoundError(f"No such data file or folder: {source!r}.")
    else:
        dataset = datasets.load_dataset(str(source), split=split, streaming=streaming)
    return as_pairs(dataset, name=str(source))


def as_pairs(dataset: datasets.Dataset | datasets.IterableDataset, name: str = "dataset"):
    """Keep the pair columns; convert the English-pivot layout (in Arrow batches); raise if columns are missing. A
    stream whose columns are not known before reading (e.g. a streamed CSV) is named by its first row's."""
    columns = dataset.column_names
    if columns is None:
        first = next(iter(dataset.take(1)), None)
        if first is None:
            raise ValueError(f"{name} has no rows: nothing to read.")
        columns = list(first)
    if set(PAIR_COLUMNS) <= set(columns):
        return dataset.select_columns(list(PAIR_COLUMNS))
    if set(ENGLISH_PIVOT_COLUMNS) <= set(columns):
        pivot = dataset.select_columns(list(ENGLISH_PIVOT_COLUMNS)).with_format("arrow")
        progress = {"desc": "English-pivot pairs"} if isinstance(dataset, datasets.Dataset) else {}
        return pivot.map(_from_english_pivot, batched=True, batch_size=100_000,
                         remove_columns=list(ENGLISH_PIVOT_COLUMNS), **progress).with_format(None)
    raise ValueError(
        f"{name} has columns {sorted(columns)}; parallel data needs {list(PAIR_COLUMNS)} "
        f"(or the English-pivot layout {list(ENGLISH_PIVOT_COLUMNS)})."
    )


def _from_english_pivot(batch: pa.Table) -> pa.Table:
    """`lang, en, text` -> `src, tgt, src_lang, tgt_lang`: English as the source, `lang` the target's language."""
    english = pa.array(["en"] * len(batch), pa.string())
    return pa.table({"src": batch["en"], "tgt": batch["text"], "src_lang": english, "tgt_lang": batch["lang"]})


def texts_of(pairs: datasets.Dataset) -> set[str]:
    """Every text on either side of the pairs (for the small side: held-out data)."""
    return set(pairs["src"]) | set(pairs["tgt"])


def _arrow_batches(dataset: datasets.Dataset, columns: list[str]):
    """`(first row, pyarrow.Table)` of `columns`, `SCAN_ROWS` rows at a time."""
    offset = 0
    for batch in dataset.select_columns(columns).with_format("arrow").iter(batch_size=SCAN_ROWS):
        yield offset, batch
        offset += len(batch)


def _first_row(dataset: datasets.Dataset, column: str, is_bad) -> int | None:
    """The index of the first row whose `column` value `is_bad` (an Arrow array -> boolean array), else None."""
    for offset, batch in _arrow_batches(dataset, [column]):
        index = pc.index(pc.fill_null(is_bad(batch.column(0)), True), True).as_py()
        if index >= 0:
            return offset + index
    return None


def seen_texts(pairs: datasets.Dataset, texts: set[str]) -> set[str]:
    """The texts among `texts` that occur on either side of `pairs`: `texts` (the small side, e.g. held-out data)
    is the value set, looked up in Arrow batches of the pairs, so memory grows with `texts`, not with the pairs."""
    found: set[str] = set()
    for _, batch in _arrow_batches(pairs, ["src", "tgt"]):
        for column in batch.columns:
            value_set = pa.array(sorted(texts), column.type)
            found.update(pc.filter(column, pc.is_in(column, value_set=value_set)).to_pylist())
    return found


def drop_seen_pairs(pairs: datasets.Dataset, training: datasets.Dataset) -> tuple[datasets.Dataset, int]:
    """The pairs neither of whose texts occurs in `training` (e.g. held-out pairs against the training pairs), and
    how many were dropped."""
    seen = seen_texts(training, texts_of(pairs))
    if not seen:
        return pairs, 0
    kept = pairs.filter(lambda row: row["src"] not in seen and row["tgt"] not in seen)
    return kept, len(pairs) - len(kept)


def row_place(source, index: int) -> str:
    """Where row `index` of a data source is, for an error: the line of a local text file (after a TSV / CSV header
    line), else the row."""
    path = Path(str(source))
    suffix = _format_suffix(path)
    if path.is_file() and suffix in (".tsv", ".csv", ".jsonl", ".json"):
        return f"line {index + (2 if suffix in ('.tsv', '.csv') else 1)}"
    return f"row {index}"


def validate_pairs(dataset: datasets.Dataset, languages: list[str] | None = None, name: str = "dataset",
                   first_row: int = 0) -> None:
    """Raise a `ValueError` naming the first bad row: a missing / empty / whitespace-only text or, when `languages`
    is given, an unknown language code. Texts longer than the model's positions are not errors: the tokenizer
    truncates them. The checks run in Arrow batches (`SCAN_ROWS` rows), column by column. `dataset` is the part of
    `name` from its row `first_row` on (a batch of a stream: `checked_stream`)."""
    if len(dataset) == 0:
        raise ValueError(f"{name} is empty: no parallel pairs to use.")
    for column in PAIR_COLUMNS:
        if getattr(dataset.features[column], "dtype", None) in ("string", "large_string"):
            index = _first_row(dataset, column, lambda values: pc.match_substring_regex(values, _BLANK))
        else:  # numbers, nulls: not text, from the first row on
            index = 0
        if index is not None:
            value = dataset[index][column]
            raise ValueError(
                f"{name}, {row_place(name, first_row + index)}: column {column!r} is {value!r}; every pair needs two "
                "non-empty texts and two language codes. Remove or fix that row."
            )
    for column in ("src_lang", "tgt_lang"):
        for code in sorted(dataset.unique(column), key=str):  # the distinct codes, from Arrow: no second pass
            problem = language_code_problem(code)
            if problem:
                index = _first_row(dataset, column, lambda values, code=code: pc.equal(values, code))
                raise ValueError(f"{name}, {row_place(name, first_row + index)}: column {column!r}: {problem}. Fix "
                                 "the code, or remove the row.")
    if languages is not None:
        check_languages(dataset, languages, name, first_row)


def check_languages(dataset: datasets.Dataset, languages: list[str], name: str = "dataset",
                    first_row: int = 0) -> None:
    """Raise a `ValueError` naming the first row whose language code has no `<2xx>` token."""
    known = set(languages)
    for column in ("src_lang", "tgt_lang"):
        unknown = sorted(set(dataset.unique(column)) - known, key=str)
        if unknown:
            index = _first_row(dataset, column, lambda values: pc.is_in(values, value_set=pa.array(unknown)))
            raise ValueError(
                f"{name}, {row_place(name, first_row + index)}: unknown language code {dataset[index][column]!r} in "
                f"{column!r}; the tokenizer has <2xx> tokens for {sorted(known)}. Retrain the tokenizer with that "
                "language or drop the row."
            )


def checked_stream(pairs: datasets.IterableDataset, languages: list[str], name: str, held_out: set[str],
                   on_overlap: str = "remove", batch_size: int = 1000) -> datasets.IterableDataset:
    """A stream of pairs checked as it is read, `batch_size` rows at a time: a bad row stops the run with the same
    error `validate_pairs` gives (its row or line in `name`), when training reaches it. Pairs that share a text with
    `held_out` (the evaluation sets) are skipped, as the whole-corpus path removes those evaluation pairs instead (a
    stream cannot be scanned first), or, with `on_overlap="error"`, stop the run naming the row."""
    value_set = pa.array(sorted(held_out), pa.string())

    def check(batch: pa.Table, indices: list[int]) -> pa.Table:
        validate_pairs(datasets.Dataset(batch), languages, name, first_row=indices[0])
        seen = pc.or_(pc.is_in(batch["src"], value_set=value_set), pc.is_in(batch["tgt"], value_set=value_set))
        index = pc.index(seen, True).as_py()
        if index >= 0 and on_overlap == "error":
            raise ValueError(f"{name}, {row_place(name, indices[0] + index)}: the pair shares a text with the "
                             "evaluation data; train on other pairs, or set data.on_training_overlap: remove to skip "
                             "such pairs.")
        return batch.filter(pc.invert(seen))

    checked = pairs.with_format("arrow").map(check, batched=True, batch_size=batch_size, with_indices=True)
    return checked.with_format(None)


def pair_languages(dataset: datasets.Dataset) -> list[str]:
    """Sorted language codes used on either side of the pairs."""
    return sorted(set(dataset.unique("src_lang")) | set(dataset.unique("tgt_lang")))


def add_token_lengths(pairs: datasets.Dataset, tokenizer, column: str = "length") -> datasets.Dataset:
    """Add the longer side's token count as `column`, for length-grouped batching (less padding)."""

    def lengths(batch):
        # verbose=False: a text longer than the model is counted here, and truncated where it is encoded
        sources = tokenizer(batch["src"], add_special_tokens=False, verbose=False)["input_ids"]
        targets = tokenizer(batch["tgt"], add_special_tokens=False, verbose=False)["input_ids"]
        return {column: [max(len(s), len(t)) for s, t in zip(sources, targets)]}

    return pairs.map(lengths, batched=True, batch_size=1000, desc="token lengths")


def token_ids(tokenizer, max_length: int):
    """A function of a list of texts that gives their token ids as `tokenizer(texts, truncation=True,
    max_length=max_length)` gives them (the tokenizer's special tokens, longest-first truncation on its side). A fast
    tokenizer's Rust backend is called directly (`encode_batch_fast`: no offsets, no `BatchEncoding`), about 1.4x
    faster than through the tokenizer; on a copy, since truncation is set on the backend, which would be saved."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):  # a slow (Python) tokenizer
        tokenizer = copy.deepcopy(tokenizer)
        return lambda texts: tokenizer(texts, truncation=True, max_length=max_length, verbose=False,
                                       return_attention_mask=False, return_token_type_ids=False)["input_ids"]
    backend = copy.deepcopy(backend)
    backend.enable_truncation(max_length, stride=0, strategy="longest_first", direction=tokenizer.truncation_side)
    backend.no_padding()
    return lambda texts: [encoding.ids for encoding in backend.encode_batch_fast(texts, add_special_tokens=True)]


def tokenize_pairs(pairs: datasets.Dataset | datasets.IterableDataset, tokenizer, max_length: int,
                   length_column: str | None = None, num_proc: int | None = None):
    """Add `src_input_ids` and `tgt_input_ids`: each side tokenized once, as `ParallelPairCollator` would (truncated
    to `max_length`, with the tokenizer's special tokens), so that batches are only padded; with `length_column`, also
    the longer side's token count, for length-grouped batching. A batched `map`, cached by `datasets` (a second
    process with the same pairs and tokenizer reads the cache), over `num_proc` processes when given; a stream is
    tokenized as it is read."""

    ids_of = token_ids(tokenizer, max_length)

    def encode(batch):
        ids = {f"{side}_input_ids": ids_of(batch[side]) for side in ("src", "tgt")}
        if length_column is not None:
            ids[length_column] = [max(len(s), len(t)) for s, t in zip(ids["src_input_ids"], ids["tgt_input_ids"])]
        return ids

    if isinstance(pairs, datasets.IterableDataset):  # a stream: tokenized as it is read
        return pairs.map(encode, batched=True, batch_size=1000)
    features = pairs.features.copy()  # int32 ids: half the disk of the default int64
    for name in ("src_input_ids", "tgt_input_ids", *([length_column] if length_column else [])):
        features[name] = datasets.Value("int32") if name == length_column else datasets.List(datasets.Value("int32"))
    return pairs.map(encode, batched=True, batch_size=1000, num_proc=num_proc, features=features, desc="tokenizing")
