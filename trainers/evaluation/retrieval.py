"""Translation retrieval P@1 by cosine similarity, both directions (Tatoeba protocol, EMS paper sec. 5.1)."""

from collections.abc import Callable
from collections import defaultdict

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

SimilarityFn = Callable[[list[str], list[str]], np.ndarray]


def cosine_similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    source = source / np.maximum(np.linalg.norm(source, axis=1, keepdims=True), 1e-12)
    target = target / np.maximum(np.linalg.norm(target, axis=1, keepdims=True), 1e-12)
    return source @ target.T


def precision_at_1(similarity: np.ndarray) -> tuple[float, float]:
    """P@1 of `source -> target` and `target -> source` where row i of the sources translates column i."""
    if similarity.ndim != 2 or similarity.shape[0] != similarity.shape[1] or similarity.shape[0] == 0:
        raise ValueError(f"precision_at_1 needs a non-empty square similarity matrix, got {similarity.shape}.")
    if np.isnan(similarity).any():
        raise ValueError("The similarity matrix holds NaN values; check the embeddings.")
    gold = np.arange(similarity.shape[0])
    return float((similarity.argmax(axis=1) == gold).mean()), float((similarity.argmax(axis=0) == gold).mean())


def embedding_similarity(embed: Callable[[list[str]], np.ndarray]) -> SimilarityFn:
    """Cosine similarity between the embeddings of two lists of texts."""
    return lambda sources, targets: cosine_similarity_matrix(embed(sources), embed(targets))


def tfidf_similarity(sources: list[str], targets: list[str]) -> np.ndarray:
    """Baseline: cosine between character 2-4-gram TF-IDF vectors fitted on both sides."""
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True, sublinear_tf=True)
    vectorizer.fit(sources + targets)
    return (vectorizer.transform(sources) @ vectorizer.transform(targets).T).toarray()


def retrieval_by_language(pairs, similarity: SimilarityFn) -> dict[str, dict[str, float]]:
    """P@1 per language pair of a pair dataset (`src, tgt, src_lang, tgt_lang`), each pair's pool its own rows, plus
    `"average"` over the language pairs. Keys are `src_lang-tgt_lang`; `p@1` is the mean of both directions."""
    groups = defaultdict(lambda: ([], []))
    for row in pairs:
        sources, targets = groups[f"{row['src_lang']}-{row['tgt_lang']}"]
        sources.append(row["src"])
        targets.append(row["tgt"])
    if not groups:
        raise ValueError("No pairs to evaluate retrieval on.")
    results = {}
    for name in sorted(groups):
        sources, targets = groups[name]
        forward, backward = precision_at_1(similarity(sources, targets))
        results[name] = {"p@1": (forward + backward) / 2, "p@1_src2tgt": forward, "p@1_tgt2src": backward,
                         "size": len(sources)}
    results["average"] = {key: float(np.mean([r[key] for r in results.values()]))
                          for key in ("p@1", "p@1_src2tgt", "p@1_tgt2src")}
    return results
