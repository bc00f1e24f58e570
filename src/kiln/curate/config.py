"""Curation's settings: the `curate` section and its steps' subsections (normalize, quality, dedup).

Plain dataclasses with no heavy imports, so reading a config loads neither numpy nor the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.config import require


@dataclass
class NormalizeConfig:
    enabled: bool = True
    """Run the normalisation step."""
    fix_mojibake: bool = True
    """Repair text that was decoded with the wrong codec (ftfy), e.g. 'cafÃ©' -> 'café'."""
    nfc: bool = True
    """Compose characters to Unicode NFC."""
    strip_control: bool = True
    """Remove control characters, zero-width spaces and byte-order marks; CRLF/CR become LF."""
    whitespace: bool = True
    """Collapse runs of spaces, strip trailing spaces, at most one blank line in a row."""


@dataclass
class QualityConfig:
    enabled: bool = True
    """Run the quality filters."""
    min_words: int = 50
    """Gopher: fewest words a document may have."""
    max_words: int = 100_000
    """Gopher: most words (longer documents are usually lists or dumps)."""
    min_mean_word_length: float = 3.0
    """Gopher: shortest mean word length."""
    max_mean_word_length: float = 10.0
    """Gopher: longest mean word length."""
    max_symbol_word_ratio: float = 0.1
    """Gopher: ('#' + '...') per word."""
    max_bullet_lines: float = 0.9
    """Gopher: fraction of lines starting with a bullet."""
    max_ellipsis_lines: float = 0.3
    """Gopher: fraction of lines ending in an ellipsis."""
    min_alpha_words: float = 0.8
    """Gopher: fraction of words containing a letter."""
    min_stop_words: int = 2
    """Gopher: distinct English stop words required (set 0 for non-English corpora)."""
    max_dup_line_frac: float = 0.3
    """Gopher repetition: fraction of lines that are duplicates."""
    max_dup_line_char_frac: float = 0.2
    """Gopher repetition: fraction of characters in duplicate lines."""
    max_top_ngram_frac: tuple[float, ...] = (0.20, 0.18, 0.16)
    """Gopher repetition: most frequent 2-, 3- and 4-gram's share of characters."""
    max_dup_ngram_frac: tuple[float, ...] = (0.15, 0.14, 0.13, 0.12, 0.11, 0.10)
    """Gopher repetition: share of characters in duplicated 5- to 10-grams."""
    min_sentences: int = 3
    """C4: fewest sentences."""
    min_punct_lines: float = 0.12
    """FineWeb: fraction of lines ending in punctuation."""
    max_short_lines: float = 0.67
    """FineWeb: fraction of lines under 30 characters."""
    max_dup_line_chars_fineweb: float = 0.1
    """FineWeb: characters in duplicated lines over all characters."""
    max_newlines_per_word: float = 0.3
    """FineWeb: newlines per word."""
    max_boilerplate_lines: float = 0.2
    """Fraction of lines that are cookie/javascript/terms/rights boilerplate."""


@dataclass
class DedupConfig:
    exact: bool = True
    """Drop documents whose folded text (lower case, no punctuation) was seen before."""
    near: bool = True
    """Drop near-duplicates found with MinHash LSH."""
    shingle_words: int = 5
    """Words per shingle."""
    bands: int = 14
    """LSH bands."""
    rows: int = 8
    """MinHash values per band (bands * rows hashes in all)."""
    seed: int = 1
    """Seeds the hash permutations."""


@dataclass
class CurateConfig:
    enabled: bool = True
    """Curate before the tokenizer in `kiln run` (and read the curated output in later stages)."""
    languages: str = "en"
    """Comma-separated ISO 639-1 codes to keep; empty keeps every language (still labelled)."""
    min_language_score: float = 0.5
    """Lowest language-ID probability to keep a document of a kept language."""
    pii: bool = True
    """Replace e-mails, phones, IP addresses and card numbers with typed placeholders."""
    decontaminate: bool = True
    """Drop training documents that share an n-gram with the evaluation texts."""
    decontam_ngram: int = 13
    """Words per n-gram for decontamination (GPT-3's 13)."""
    decontam_min_shared: int = 10
    """Drop a training document sharing this many n-grams with the evaluation texts; flag fewer."""
    eval_texts: str = ""
    """Evaluation texts to decontaminate against (a corpus path); empty uses kiln's validation split."""
    licence: str = ""
    """Licence of a user corpus, for the data card (the built-in corpus's is known)."""
    shard_documents: int = 50_000
    """Documents per output JSONL file."""
    workers: int = 1
    """Processes for the per-document steps (0: one per core); the output is identical for any count."""
    batch_bytes: int = 2_000_000
    """Text per batch handed to a worker; memory stays near (2 x workers + 1) batches."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)

    def __post_init__(self) -> None:
        require(self.decontam_ngram >= 3, f"curate.decontam_ngram={self.decontam_ngram} must be >= 3")
        require(self.decontam_min_shared >= 1, "curate.decontam_min_shared must be >= 1")
        require(0 <= self.min_language_score <= 1, "curate.min_language_score must be in [0, 1]")
        require(self.shard_documents > 0, "curate.shard_documents must be positive")
        require(self.workers >= 0, "curate.workers must be >= 0 (0: one per core)")
        require(self.batch_bytes > 0, "curate.batch_bytes must be positive")
