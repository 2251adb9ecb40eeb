"""Evaluation at lower cost: embeddings truncated to their leading dimensions (Matryoshka) and quantized with
sentence-transformers' `quantize_embeddings` (`int8`, `uint8`: 256 buckets per dimension between the calibration
embeddings' minimum and maximum; `binary`, `ubinary`: the sign bit, packed), then scored as the evaluators score any
embedding.

Binary embeddings are scored by Hamming distance: each packed code is unpacked to a vector of ±1, whose cosine with
another is `1 - 2 h / d` for `h` differing bits of `d`, so every ranking by that cosine (retrieval, Spearman,
nearest neighbours) is the ranking by Hamming distance. Integer codes are scored as the vectors of their values.
"""

from dataclasses import dataclass, field

import numpy as np

from .common import EmbedFn

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def check_reduction(truncate_dim: int | None, precision: str) -> None:
    """Refuse an unknown `precision` or a `truncate_dim` that is not a positive integer."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not one sentence-transformers' quantize_embeddings knows; use "
                         f"one of {PRECISIONS}.")
    if truncate_dim is not None and (isinstance(truncate_dim, bool) or not isinstance(truncate_dim, int)
                                     or truncate_dim < 1):
        raise ValueError(f"truncate_dim={truncate_dim!r}: keep a number of leading dimensions >= 1, or leave it "
                         "unset for the whole embedding.")


def scoring_vectors(codes: np.ndarray, precision: str, dim: int) -> np.ndarray:
    """The float32 vectors the evaluators score for `quantize_embeddings` output `codes` of `dim`-dimensional
    embeddings: the integer values, or for binary codes the ±1 vector of their bits (cosine = 1 - 2 Hamming / d)."""
    if precision.endswith("binary"):
        packed = codes.astype(np.uint8) if precision == "ubinary" else (codes.astype(np.int16) + 128).astype(np.uint8)
        return np.unpackbits(packed, axis=-1)[:, :dim].astype(np.float32) * 2 - 1
    return codes.astype(np.float32)


@dataclass
class ReducedEmbedder:
    """`embed` with its output truncated to `truncate_dim` (None: whole) and quantized to `precision`. Integer
    precisions calibrate their buckets on the first call's embeddings (a task embeds its training or query side
    first) and keep them for the later calls, so that every side of a task shares one scale."""

    embed: EmbedFn
    truncate_dim: int | None = None
    precision: str = "float32"
    ranges: np.ndarray | None = field(default=None, init=False)

    def __post_init__(self):
        check_reduction(self.truncate_dim, self.precision)

    def __call__(self, texts: list[str]) -> np.ndarray:
        from sentence_transformers.util import quantize_embeddings

        embeddings = np.asarray(self.embed(texts), dtype=np.float32)
        if self.truncate_dim is not None:
            if self.truncate_dim > embeddings.shape[1]:
                raise ValueError(f"truncate_dim={self.truncate_dim} is larger than the embedding "
                                 f"({embeddings.shape[1]} dims); keep at most {embeddings.shape[1]}.")
            embeddings = embeddings[:, : self.truncate_dim]
        if self.precision == "float32":
            return embeddings
        if self.precision.endswith("int8") and self.ranges is None:
            self.ranges = np.vstack((embeddings.min(axis=0), embeddings.max(axis=0)))
        codes = quantize_embeddings(embeddings, self.precision, ranges=self.ranges)
        return scoring_vectors(codes, self.precision, embeddings.shape[1])


def reduced(embed: EmbedFn, truncate_dim: int | None = None, precision: str = "float32") -> EmbedFn:
    """`embed` itself when nothing is reduced, else a `ReducedEmbedder`."""
    check_reduction(truncate_dim, precision)
    if truncate_dim is None and precision == "float32":
        return embed
    return ReducedEmbedder(embed, truncate_dim, precision)
