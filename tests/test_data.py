import datasets
import pytest
import torch
from transformers import AutoTokenizer

from trainers.collators import ParallelPairCollator
from trainers.data import DEFAULT_TRAIN, data_file, load_parallel_dataset, pair_languages, validate_pairs
from trainers.layout import PairLayout

from .conftest import LANGUAGES, write_jsonl

ROWS = [
    {"src": "Open the file.", "tgt": "Öffnen Sie die Datei.", "src_lang": "en", "tgt_lang": "de"},
    {"src": "Close the window", "tgt": "Fermer la fenêtre", "src_lang": "en", "tgt_lang": "fr"},
]


def test_embedded_default_corpus_loads_with_pair_columns():
    assert data_file("default/train.jsonl.gz") == DEFAULT_TRAIN  # shipped data is found by name
    pairs = load_parallel_dataset(DEFAULT_TRAIN)
    assert pairs.column_names == ["src", "tgt", "src_lang", "tgt_lang"]
    assert 20 <= len(pair_languages(pairs)) - 1 <= 30 and len(pairs) > 30000
    validate_pairs(pairs)


@pytest.mark.parametrize("suffix", [".jsonl", ".tsv", ".csv", ".parquet"])
def test_local_files_in_every_format(tmp_path, suffix):
    path = tmp_path / f"pairs{suffix}"
    frame = datasets.Dataset.from_list(ROWS)
    if suffix == ".jsonl":
        write_jsonl(path, ROWS)
    elif suffix == ".tsv":
        path.write_text("src\ttgt\tsrc_lang\ttgt_lang\n" + "".join("\t".join(r.values()) + "\n" for r in ROWS))
    elif suffix == ".csv":
        frame.to_csv(str(path), index=False)
    else:
        frame.to_parquet(str(path))
    assert load_parallel_dataset(path).to_list() == ROWS


def test_tsv_with_quotes_is_read_verbatim(tmp_path):
    path = tmp_path / "quotes.tsv"
    path.write_text('src\ttgt\tsrc_lang\ttgt_lang\nType "To " here\tTippen Sie "Zu " ein\ten\tde\n')
    assert load_parallel_dataset(path)[0]["src"] == 'Type "To " here'


def test_english_pivot_layout_of_the_shared_data_is_converted(tmp_path):
    path = tmp_path / "pivot.tsv"
    path.write_text("lang\ten\ttext\tsource\nde\tOpen\tÖffnen\tlo_ui\n")
    assert load_parallel_dataset(path).to_list() == [
        {"src": "Open", "tgt": "Öffnen", "src_lang": "en", "tgt_lang": "de"}
    ]


def test_dataset_folder_goes_through_load_dataset(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", ROWS)
    assert load_parallel_dataset(folder, split="train").to_list() == ROWS


def test_missing_column_is_named(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"src": "a", "tgt": "b", "src_lang": "en"}])
    with pytest.raises(ValueError, match="needs \\['src', 'tgt', 'src_lang', 'tgt_lang'\\]"):
        load_parallel_dataset(path)


def test_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such data file"):
        load_parallel_dataset(tmp_path / "nope.jsonl")
    odd = tmp_path / "pairs.xml"
    odd.write_text("<pairs/>")
    with pytest.raises(ValueError, match="Cannot tell the format"):
        load_parallel_dataset(odd)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"tgt": ""}, "row 1: column 'tgt' is ''"),
        ({"src": "   \t "}, "row 1: column 'src' is '   \\\\t '"),
        ({"src": None}, "row 1: column 'src' is None"),
        ({"tgt_lang": "ja"}, "row 1: unknown language code 'ja' in 'tgt_lang'; the tokenizer has <2xx> tokens for"),
        ({"tgt_lang": "xx"}, "row 1: column 'tgt_lang': 'xx' is no ISO 639-1 language"),
        ({"tgt_lang": "DE"}, "row 1: column 'tgt_lang': 'DE' is not a language code .*; did you mean 'de'\\?"),
    ],
)
def test_bad_rows_are_reported_with_their_index(row, message):
    rows = [ROWS[0], {**ROWS[1], **row}]
    with pytest.raises(ValueError, match=message):
        validate_pairs(datasets.Dataset.from_list(rows), languages=["de", "en", "fr"])


def test_empty_dataset_is_an_error():
    empty = datasets.Dataset.from_dict({c: [] for c in ("src", "tgt", "src_lang", "tgt_lang")})
    with pytest.raises(ValueError, match="empty"):
        validate_pairs(empty)


def pair_collator(tokenizer):
    return ParallelPairCollator(tokenizer, 32, languages=sorted(LANGUAGES), translation_tokens=True)


def test_collator_builds_both_sides_in_the_pair_layout_and_xtr_targets(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    collator = pair_collator(tokenizer)
    batch = collator(ROWS)
    n = len(ROWS)
    assert batch["input_ids"].shape[0] == 2 * n
    # sentence i's translation is row i + n (and back); its target language is the translation's
    sources, translations = PairLayout.split(batch["input_ids"])
    assert tokenizer.decode(sources[0], skip_special_tokens=True) == "open the file."
    torch.testing.assert_close(batch["translation_ids"][:n], translations)
    torch.testing.assert_close(batch["translation_ids"][n:], sources)
    languages = sorted(LANGUAGES)
    assert batch["target_language_ids"].tolist() == [languages.index(c) for c in ("de", "fr", "en", "en")]
    # padding and special tokens never count as XTR targets
    special = torch.tensor(tokenizer.all_special_ids)
    assert not torch.isin(batch["translation_ids"][batch["translation_mask"]], special).any()
    assert batch["translation_mask"].sum() == batch["attention_mask"].sum()


def test_plain_pair_collator_adds_only_what_is_asked(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    batch = ParallelPairCollator(tokenizer, 32)(ROWS)
    assert set(batch) == {"input_ids", "attention_mask"}
    with pytest.raises(ValueError, match="even number of rows"):
        PairLayout.split(batch["input_ids"][:3])
    with pytest.raises(ValueError, match="2 sources but 1 translations"):
        PairLayout.rows(["a", "b"], ["c"])


def test_collator_truncates_long_text_as_the_paper_does(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    collator = pair_collator(tokenizer)
    batch = collator([{**ROWS[0], "src": "a very long sentence " * 100}])
    assert batch["input_ids"].shape[1] == 32


def test_collator_rejects_unknown_language_and_empty_text(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    collator = pair_collator(tokenizer)
    with pytest.raises(ValueError,
                       match=r"Unknown language codes \['zz'\]; this model knows 5 languages: de, en, fr, ja, ru"):
        collator([{**ROWS[0], "tgt_lang": "zz"}])
    with pytest.raises(ValueError, match="empty or missing"):
        collator([{**ROWS[0], "tgt": " "}])
