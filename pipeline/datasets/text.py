"""Sentence-level language-model data (the IMDB protocol of Table 3, docs/data.md).

Protocol, after the authors' research code (latent-networks, lm_data.py):
  - lower-cased sentences of 5-16 tokens; punctuation marks are tokens and count towards
    the length, as in their NLTK word_tokenize counting;
  - split 85 / 5 / 10 (train / valid / test) by sentence after a seeded shuffle
    (numpy RandomState(seed).shuffle of the sentence order, as theirs with seed 42);
  - vocabulary: `<pad> <S> </S> <unk>` (pad = 0) then the `vocab_size` most frequent
    TRAIN words (ties alphabetical). Theirs counted words over all splits; counting on
    train only keeps the test set out of every modelling decision;
  - x = [<S>, w1..wn], y = [w1..wn, </S>], n + 1 scored steps (</S> is predicted).

Tokenisation rules (`tokenize`, case-insensitive, output lower-cased):
  - HTML tags are dropped (`<br />` ends a paragraph), entities unescaped; curly quotes,
    dashes and the ellipsis character are mapped to ASCII first;
  - a word is letters/digits with inner apostrophes or hyphens ("well-known", "o'clock");
  - clitics split off Penn-Treebank style: "don't" -> "do n't", "can't" -> "ca n't",
    "it's" -> "it 's", "we'll" -> "we 'll" ('s 're 've 'll 'd 'm n't);
  - kept whole: numbers with inner . , : ("3.5", "7:30"), dotted acronyms ("u.s.",
    "e.g."), the titles in ABBREVIATIONS with their period ("mr."), single-letter
    initials before a word ("j. r. r. tolkien", never "i.");
  - sentence marks: a run of . ! ? is one token ("...", "?!"); any other punctuation is
    one token per run of the same mark ("--", "''").
  `tokenize` is idempotent on its own output joined by spaces, so sentences travel as
  space-joined token strings.
Sentence splitting (`split_sentences`): at blank lines, and after a sentence-mark token
(plus the closing quotes / brackets glued to it) unless the next token starts with a
lower-case letter ("wait... what" stays one sentence).
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from collections import Counter

import numpy as np

from .audio import BadInput
from .storage import atomic_dir, save_npy, write_json

PAD, BOS, EOS, UNK = "<pad>", "<S>", "</S>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)
PAD_ID, BOS_ID, EOS_ID, UNK_ID = range(4)
MIN_TOKENS, MAX_TOKENS = 5, 16
SPLIT_FRACTIONS = (0.85, 0.05, 0.10)
SPLITS = ("train", "valid", "test")
ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "mt", "lt", "col",
                 "gen", "sgt", "capt", "inc", "ltd")

_ASCII = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u00b4": "'", "`": "'",
                        "\u201c": '"', "\u201d": '"', "\u201e": '"',
                        "\u2013": "--", "\u2014": "--", "\u2026": "...", "\u00a0": " "})
_TAG = re.compile(r"</?[a-zA-Z][^<>]{0,200}>")
_BREAK = re.compile(r"<\s*(?:br|p)\s*/?\s*>", re.I)
_PARAGRAPH = re.compile(r"\n[ \t\r\f\v]*\n")
_TOKEN = re.compile(r"""
      [^\W\d_]{2,}(?![.'\w-])                             # fast path: a plain word
    | (?:[^\W\d_]\.){2,}                                  # dotted acronym: u.s.  e.g.
    | \b(?:%s)\.                                          # title: mr.
    | [a-hj-z](?<![^\W\d_][a-hj-z])\.(?=\s+[^\W\d_])      # initial before a word, not "i."
    | \d+(?:[.,:]\d+)+                                    # 3.5  1,000  7:30
    | [^\W_]+(?:['-][^\W_]+)*                             # word, inner ' and - kept
    | '(?:s|re|ve|ll|d|m)(?![^\W_])                       # clitic already split off
    | [.!?]+                                              # sentence marks, one token a run
    | ([^\w\s])\1*                                        # other punctuation, a run of one mark
""" % "|".join(ABBREVIATIONS), re.X | re.I)
_CLITIC = re.compile(r"(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$", re.I)
_SENTENCE_END = re.compile(r"[.!?]+")
_CLOSERS = frozenset({'"', "'", "''", ")", "]", "}"})


def clean_text(raw: str) -> str:
    """Markup out, ASCII punctuation in; `<br />` and `<p>` become paragraph breaks."""
    text = _BREAK.sub("\n\n", raw)
    text = _TAG.sub(" ", text)
    return html.unescape(text).translate(_ASCII)


def _split_clitics(word: str) -> list[str]:
    """"shouldn't've" -> ["should", "n't", "'ve"]: every trailing clitic, Treebank style."""
    out = []
    while "'" in word and (m := _CLITIC.match(word)):
        word, clitic = m.groups()
        out.insert(0, clitic)
    return [word] + out


def _spans(text: str) -> list[tuple[str, int, int]]:
    """(token, start, end) of every token, case kept, clitics split."""
    out = []
    for m in _TOKEN.finditer(text):
        tok, (pos, end) = m.group(), m.span()
        if "'" not in tok or len(tok) < 3:
            out.append((tok, pos, end))
            continue
        for p in _split_clitics(tok):
            out.append((p, pos, pos + len(p)))
            pos += len(p)
    return out


def tokenize(sentence: str) -> list[str]:
    """Lower-cased tokens of one sentence (no sentence splitting)."""
    return [t.lower() for t, _, _ in _spans(clean_text(sentence))]


def split_sentences(text: str) -> list[list[str]]:
    """Token lists (lower-cased) of the sentences of a running text."""
    sentences = []
    for para in _PARAGRAPH.split(clean_text(text)):
        spans = _spans(para)
        cur, i = [], 0
        while i < len(spans):
            tok, _, end = spans[i]
            cur.append(tok)
            i += 1
            if not _SENTENCE_END.fullmatch(tok):
                continue
            # closing quotes / brackets glued to the mark belong to this sentence
            while i < len(spans) and spans[i][0] in _CLOSERS and spans[i][1] == end:
                cur.append(spans[i][0])
                end = spans[i][2]
                i += 1
            if i < len(spans) and spans[i][0][:1].islower():
                continue
            sentences.append([t.lower() for t in cur])
            cur = []
        if cur:
            sentences.append([t.lower() for t in cur])
    return sentences


def keep_sentence(tokens: list[str], min_tokens: int = MIN_TOKENS, max_tokens: int = MAX_TOKENS) -> bool:
    return min_tokens <= len(tokens) <= max_tokens


# -- vocabulary ------------------------------------------------------------------------------

def build_vocab(train: list[list[str]], vocab_size: int) -> list[str]:
    """Index -> word: the specials, then the `vocab_size` most frequent train words
    (ties broken alphabetically, so the vocabulary is a pure function of the data)."""
    counts = Counter(w for s in train for w in s)
    for s in SPECIALS:
        counts.pop(s, None)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return list(SPECIALS) + [w for w, _ in ranked[:vocab_size]]


def coverage_size(train: list[list[str]], fraction: float) -> int:
    """Smallest number of most frequent train words covering `fraction` of train tokens."""
    counts = np.array(sorted(Counter(w for s in train for w in s).values(), reverse=True))
    if len(counts) == 0:
        return 0
    cum = np.cumsum(counts) / counts.sum()
    return int(np.searchsorted(cum, fraction - 1e-12) + 1)


def encode(sentences: list[list[str]], itos: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows [<S>, w1..wn, </S>, <pad>...] as int32 (N, MAX_TOKENS + 2) and the scored steps
    n + 1 per sentence as int32 (N,). Out-of-vocabulary words become <unk>."""
    stoi = {w: i for i, w in enumerate(itos)}
    width = max((len(s) for s in sentences), default=0) + 2
    rows = np.full((len(sentences), width), PAD_ID, np.int32)
    lengths = np.zeros(len(sentences), np.int32)
    for r, s in enumerate(sentences):
        rows[r, 0] = BOS_ID
        rows[r, 1:len(s) + 1] = [stoi.get(w, UNK_ID) for w in s]
        rows[r, len(s) + 1] = EOS_ID
        lengths[r] = len(s) + 1
    return rows, lengths


def split_sizes(n: int) -> tuple[int, int, int]:
    """85 / 5 / 10 by sentence: train int(0.85 n), valid int(0.05 n), test the rest."""
    tr, va = int(n * SPLIT_FRACTIONS[0]), int(n * SPLIT_FRACTIONS[1])
    return tr, va, n - tr - va


# -- prepared folder -------------------------------------------------------------------------

def prepare_text(sentences: list[str], out, *, vocab_size: int, seed: int, dataset: str,
                 source_info: dict) -> dict:
    """Tokenise, filter to 5-16 tokens, shuffle, split, build the vocabulary and write the
    "tokens" layout (pipeline/datasets/batches.py) to `out` atomically. Returns the manifest.

    source_info names where the sentences came from; its "path" (a file or folder) is what
    an error message points at."""
    where = source_info.get("path") or dataset
    if vocab_size < 1:
        raise BadInput(f"data.vocab_size={vocab_size}: must be at least 1 word")
    toks = [tokenize(s) for s in sentences]
    kept = [t for t in toks if keep_sentence(t)]
    if not kept:
        raise BadInput(f"{where}: no sentence of {MIN_TOKENS}-{MAX_TOKENS} tokens "
                       f"({len(sentences)} given)")
    n_tr, n_va, n_te = split_sizes(len(kept))
    if min(n_tr, n_va, n_te) == 0:
        raise BadInput(f"{where}: only {len(kept)} sentences of {MIN_TOKENS}-{MAX_TOKENS} tokens; "
                       f"the 85/5/10 split needs at least 20")
    order = np.arange(len(kept))
    np.random.RandomState(seed).shuffle(order)
    shuffled = [kept[i] for i in order]
    parts = dict(zip(SPLITS, (shuffled[:n_tr], shuffled[n_tr:n_tr + n_va], shuffled[n_tr + n_va:])))
    itos = build_vocab(parts["train"], vocab_size)
    known = set(itos[len(SPECIALS):])
    with atomic_dir(out) as tmp:
        splits, stats = {}, {}
        for name, sents in parts.items():
            rows, lengths = encode(sents, itos)
            save_npy(os.path.join(tmp, f"{name}.npy"), rows)
            save_npy(os.path.join(tmp, f"{name}_lengths.npy"), lengths)
            words = sum(len(s) for s in sents)
            unk = sum(w not in known for s in sents for w in s)
            splits[name] = {"layout": "tokens", "file": f"{name}.npy",
                            "lengths": f"{name}_lengths.npy", "sequences": len(sents),
                            "tokens": int(lengths.sum())}
            stats[name] = {"words": words, "unk": unk, "unk_fraction": unk / max(words, 1)}
        write_json(os.path.join(tmp, "vocab.json"), itos)
        manifest = {
            "dataset": dataset, "kind": "tokens", "x_dim": len(itos),
            "sample_rate": None, "frame_size": 1, "mean": 0.0, "std": 1.0,
            "splits": splits, "split_sizes": {s: len(p) for s, p in parts.items()},
            "tokens": {s: v["tokens"] for s, v in splits.items()},
            "unk_fraction": {s: stats[s]["unk_fraction"] for s in SPLITS},
            "words": {s: stats[s]["words"] for s in SPLITS},
            "vocab_file": "vocab.json", "vocab_words": len(itos) - len(SPECIALS),
            "vocab_size_param": vocab_size,
            "specials": {PAD: PAD_ID, BOS: BOS_ID, EOS: EOS_ID, UNK: UNK_ID},
            "train_words_95": coverage_size(parts["train"], 0.95),
            "protocol": {"name": "imdb", "min_tokens": MIN_TOKENS, "max_tokens": MAX_TOKENS,
                         "length_unit": "tokens, punctuation included",
                         "split": "85/5/10 by sentence, RandomState(seed).shuffle",
                         "seed": seed, "vocab": "most frequent train words + <pad> <S> </S> <unk>",
                         "first_step": "x = [<S>, w1..wn], y = [w1..wn, </S>]",
                         "target_mode": None},
            "sentences_given": len(sentences), "sentences_kept": len(kept),
            "sources": source_info, "skipped": [], "skipped_count": 0,
        }
        write_json(os.path.join(tmp, "manifest.json"), manifest)
    return manifest


def read_vocab(prepared_dir) -> list[str]:
    with open(os.path.join(prepared_dir, "vocab.json")) as f:
        return json.load(f)


def ids_to_text(ids, itos: list[str], eos: int = EOS_ID) -> str:
    """Token ids -> words up to (not including) the first </S>; padding left out."""
    words = []
    for i in (int(v) for v in ids):
        if i == eos:
            break
        if i != PAD_ID:
            words.append(itos[i])
    return " ".join(words)


def perplexity(total_log_bound: float, n_tokens: float) -> float:
    """exp(-total / n_tokens): n_tokens counts every predicted token, </S> included
    (the scored steps); total is a summed log-likelihood or a lower bound of it, so a
    bound gives an upper bound on perplexity."""
    if n_tokens <= 0:
        raise ValueError(f"perplexity needs a positive token count, got {n_tokens}")
    return math.exp(-total_log_bound / n_tokens)
