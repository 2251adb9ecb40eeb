"""Translators into English for multi-source classification (Multi-source paper, sec. 3 and 4.1.2), one interface:
`translator(texts) -> translations`, one per text, and an `id` that names the translator (model, beams, length) in
the cache.

* `ModelTranslator`: a transformers seq2seq translation model (Marian, M2M100, T5, ...) from a local folder or a Hub
  id, batched beam search (the paper decodes with a beam width of 5), with a progress bar.
* `FunctionTranslator`: a user function `module:function` taking a list of texts and returning their translations.
* `translate_cached`: translates each distinct text once per translator, keeping the translations in a JSON cache
  keyed by translator id and text, so a second run (or a second setting) reuses them.

A column the data already hold (`translation.column`) needs no translator: the recipe reads it as is.
"""

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...config import import_from_config

logger = logging.getLogger(__name__)


class TranslationError(ValueError):
    """A translator broke its contract (wrong number of translations, a non-string)."""


def checked_translations(texts: Sequence[str], translations, translator_id: str) -> list[str]:
    """`translations` as a list after checking there is one string per text."""
    translations = list(translations)
    if len(translations) != len(texts):
        raise TranslationError(
            f"Translator {translator_id} returned {len(translations)} translations for {len(texts)} texts: it must "
            "return exactly one translation per input text, in order.")
    bad = [index for index, text in enumerate(translations) if not isinstance(text, str)]
    if bad:
        raise TranslationError(f"Translator {translator_id} returned {translations[bad[0]]!r} for text "
                               f"{texts[bad[0]]!r}: each translation must be a string.")
    return translations


class ModelTranslator:
    """Batched beam-search translation with a transformers `AutoModelForSeq2SeqLM` and its tokenizer.

    `source_language` / `target_language` are passed to tokenizers that take them (M2M100, NLLB, mBART: `src_lang`,
    and the target language's id forced as the first generated token); Marian and T5 models need neither.
    """

    def __init__(self, model: str | Path, num_beams: int = 5, batch_size: int = 16, max_length: int = 256,
                 max_new_tokens: int = 256, source_language: str | None = None, target_language: str = "en",
                 device: str | None = None, progress: bool = True):
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        from ...loading import resolve_model

        if min(num_beams, batch_size, max_length, max_new_tokens) < 1:
            raise ValueError(f"num_beams={num_beams}, batch_size={batch_size}, max_length={max_length} and "
                             f"max_new_tokens={max_new_tokens} must all be at least 1.")
        folder = resolve_model(model)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model = AutoModelForSeq2SeqLM.from_pretrained(folder, trust_remote_code=False).to(self.device).eval()
        self.num_beams, self.batch_size, self.max_length = num_beams, batch_size, max_length
        self.max_new_tokens, self.progress = max_new_tokens, progress
        self.generate_options = {}
        if source_language is not None and hasattr(self.tokenizer, "src_lang"):
            self.tokenizer.src_lang = source_language
        if hasattr(self.tokenizer, "get_lang_id"):  # M2M100
            self.generate_options["forced_bos_token_id"] = self.tokenizer.get_lang_id(target_language)
        elif hasattr(self.tokenizer, "lang_code_to_id"):  # mBART-50, NLLB
            self.generate_options["forced_bos_token_id"] = self.tokenizer.convert_tokens_to_ids(target_language)
        self.id = (f"model={model};beams={num_beams};max_length={max_length};max_new_tokens={max_new_tokens};"
                   f"source={source_language};target={target_language}")

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> list[str]:
        translations = []
        batches = range(0, len(texts), self.batch_size)
        for start in tqdm(batches, desc="translating", unit="batch", disable=not self.progress):
            batch = list(texts[start:start + self.batch_size])
            encoded = self.tokenizer(batch, padding=True, truncation=True, max_length=self.max_length,
                                     return_tensors="pt").to(self.device)
            generated = self.model.generate(**encoded, num_beams=self.num_beams,  # beam width 5 (sec. 4.1.2)
                                            max_new_tokens=self.max_new_tokens, **self.generate_options)
            translations += self.tokenizer.batch_decode(generated, skip_special_tokens=True)
        return translations


class FunctionTranslator:
    """A user function given as `module:function` (the working directory's module or an installed one: code the
    config names, run when the recipe is made), called with a list of texts."""

    def __init__(self, spec: str):
        function = import_from_config(spec, "translation.function")
        if not callable(function):
            raise ValueError(f"translation.function={spec!r} is {type(function).__name__}, not a function.")
        self.function: Callable[[list[str]], Sequence[str]] = function
        self.id = f"function={spec}"

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return list(self.function(list(texts)))


def default_cache_dir() -> Path:
    """`$HF_DATASETS_CACHE/ems_translations`: beside the `datasets` cache of the data."""
    import datasets

    return Path(os.environ.get("EMS_TRANSLATION_CACHE", Path(datasets.config.HF_DATASETS_CACHE) / "ems_translations"))


def cache_file(cache_dir: str | Path, translator_id: str) -> Path:
    return Path(cache_dir) / f"{hashlib.sha256(translator_id.encode()).hexdigest()[:16]}.json"


def translate_cached(translator, texts: Sequence[str], cache_dir: str | Path | None = None) -> list[str]:
    """The translation of every text, each distinct text translated at most once per translator: translations are
    read from and added to `cache_dir/<hash of translator.id>.json` (`{"translator": id, "translations": {text:
    translation}}`)."""
    path = cache_file(cache_dir or default_cache_dir(), translator.id)
    cached = json.loads(path.read_text(encoding="utf-8"))["translations"] if path.is_file() else {}
    missing = [text for text in dict.fromkeys(texts) if text not in cached]
    if missing:
        logger.warning("Translating %d texts with %s (%d already cached in %s).", len(missing), translator.id,
                       len(cached), path)
        cached.update(zip(missing, checked_translations(missing, translator(missing), translator.id)))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp")
        partial.write_text(json.dumps({"translator": translator.id, "translations": cached}, ensure_ascii=False),
                           encoding="utf-8")
        partial.replace(path)  # a kill while writing leaves the previous cache intact
    return [cached[text] for text in texts]
