"""BM25 for the SQLite lexical index, scored in Python over a stage's bounded candidates.

FTS5's `bm25()` is exact but, per statement, scans every query phrase's whole posting
list for its document frequency before scoring one row (at 1M items: ~15 ms for a word
in half the catalogue, for every stage of every query). This computes the same formula
(`fts5_aux.c`: k1 = 1.2, b = 0.75, column weights, IDF floored at 1e-6, statistics of the
whole table) from

- the table's row count and token total: FTS5's averages record, one row read;
- each phrase's document frequency: counted by FTS5 once, then cached per process and
  counted again when the table's row count has moved by `DF_DRIFT` or after `DF_TTL_S`
  (an IDF is a corpus statistic: a few writes do not move it);
- each candidate's term frequencies and length: its text and attributes cut into words
  and each word into FTS5's own tokens, asked of FTS5 itself (an in-memory table with the
  same tokenizer and its `fts5vocab` view), cached per word.

So the ranking is FTS5's, without its per-statement scans; `tests/search/test_bm25.py`
compares the two on the same rows.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
from sqlalchemy import text
from sqlalchemy.orm import Session

from search.catalog import lexical

K1, B = 1.2, 0.75
IDF_FLOOR = 1e-6
DF_DRIFT = 0.01
DF_TTL_S = 300.0
CACHED_WORDS = 200_000
# Measured at 1M items (2 cores): FTS5 counts a document frequency at ~18 ns a posting;
# reading a candidate's words and scoring it here costs ~5 us.
SCAN_NS_PER_POSTING, SCORE_NS_PER_ROW = 18.0, 5000.0
_AVERAGES_ROWID = 1  # FTS5's record of the row count and per-column token totals

Phrase = tuple[str, ...]  # FTS5 tokens of one query word


def table_stats(session: Session) -> tuple[int, float]:
    """(rows, average tokens per row) of the whole FTS5 table, as bm25() reads them."""
    block = session.connection().exec_driver_sql(
        f"SELECT block FROM {lexical.FTS_TABLE}_data WHERE id = {_AVERAGES_ROWID}").scalar()
    if not block:
        return 0, 0.0
    rows, at = lexical.varint(block, 0)
    tokens = 0
    while at < len(block):
        size, at = lexical.varint(block, at)
        tokens += size
    return rows, tokens / rows if rows else 0.0


class _Lru(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def keep(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


class Tokenizer:
    """Words to FTS5 tokens (case folded, diacritics removed, porter stems), by FTS5."""

    def __init__(self, size: int = CACHED_WORDS) -> None:
        self._cache: _Lru = _Lru(size)
        self._lock = threading.Lock()
        self._fts = sqlite3.connect(":memory:", check_same_thread=False)
        self._fts.execute(f"CREATE VIRTUAL TABLE t USING fts5(x, tokenize='{lexical.TOKENIZE}')")
        self._fts.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")

    def tokens(self, words: Sequence[str]) -> dict[str, Phrase]:
        with self._lock:
            found = {w: self._cache[w] for w in words if w in self._cache}
            missing = sorted(set(words) - found.keys())
            if missing:
                found.update(self._ask(missing))
            return found

    def _ask(self, words: list[str]) -> dict[str, Phrase]:
        self._fts.executemany("INSERT INTO t(rowid, x) VALUES (?, ?)", enumerate(words, 1))
        parts: dict[int, list[str]] = {}
        for doc, term in self._fts.execute("SELECT doc, term FROM v ORDER BY doc, offset"):
            parts.setdefault(doc, []).append(term)
        self._fts.execute("DELETE FROM t")
        out = {w: tuple(parts.get(i, ())) for i, w in enumerate(words, 1)}
        for w, phrase in out.items():
            self._cache.keep(w, phrase)
        return out


class DocumentFrequencies:
    """Rows of the whole table holding each phrase (as bm25() counts them), cached."""

    def __init__(self, size: int = CACHED_WORDS) -> None:
        self._cache: _Lru = _Lru(size)  # word -> (count, table rows then, time)
        self._lock = threading.Lock()

    def cached(self, words: Sequence[str], rows: int) -> dict[str, int]:
        """The words' counts still fresh in the cache (others are left out)."""
        now, out = time.monotonic(), {}
        with self._lock:
            for w in words:
                hit = self._cache.get(w)
                if hit is not None and now - hit[2] <= DF_TTL_S and \
                        abs(rows - hit[1]) <= DF_DRIFT * max(hit[1], 1):
                    out[w] = hit[0]
        return out

    def get(self, session: Session, words: Sequence[str], rows: int) -> dict[str, int]:
        now, out = time.monotonic(), self.cached(words, rows)
        for w in (w for w in words if w not in out):  # one posting scan, then cached
            out[w] = int(session.scalar(text(
                f"SELECT count(*) FROM {lexical.FTS_TABLE} WHERE {lexical.FTS_TABLE} MATCH :q"),
                {"q": f'"{w}"'}) or 0)
            with self._lock:
                self._cache.keep(w, (out[w], rows, now))
        return out


class Bm25:
    """Scores candidate rows (text, attributes) for a query's words, as FTS5 would."""

    def __init__(self) -> None:
        self.tokenizer = Tokenizer()
        self.frequencies = DocumentFrequencies()

    def fts5_is_cheaper(self, session: Session, phrases: Sequence[str],
                        groups: Sequence[Sequence[str]] | None, cap: int) -> bool:
        """Whether FTS5's own bm25() would cost less for a statement whose expression
        holds `phrases` (repeats included: each is scanned) than scoring here: its scans
        cost each phrase's document frequency in postings, this costs the rows scored,
        at most `cap`, or (`groups`: every group must match, any word of a group) their
        estimate as if words were independent. Unknown frequencies: score here (that
        counts and caches them)."""
        n_rows, _ = table_stats(session)
        counts = self.frequencies.cached(list(set(phrases)), n_rows)
        if len(counts) < len(set(phrases)) or not n_rows:
            return False
        rows = float(cap)
        if groups is not None:
            share = math.prod(min(1.0, sum(counts[w] for w in g) / n_rows) for g in groups)
            rows = min(rows, n_rows * share)
        return sum(counts[w] for w in phrases) * SCAN_NS_PER_POSTING < rows * SCORE_NS_PER_ROW

    def score(self, session: Session, query_words: Sequence[str],
              rows: Sequence[tuple[str | None, str | None]]) -> list[float]:
        """One score per row (higher is better) over the query's distinct words."""
        words = list(dict.fromkeys(query_words))
        n_rows, average = table_stats(session)
        if not rows or not words or not n_rows:
            return [0.0] * len(rows)
        frequencies = self.frequencies.get(session, words, n_rows)
        phrases = self.tokenizer.tokens(words)
        weighted = [(phrases[w], _idf(n_rows, frequencies[w])) for w in words if phrases[w]]
        stream = _stream(rows)
        known = self.tokenizer.tokens(list(set(stream) - {_ROW_END, _TEXT_END}))
        return _Scorer(weighted, known, average).scores(stream)


_ROW_END, _TEXT_END = "\x00", "\x01"
_TEXT_CODE, _ROW_CODE, _FIRST_FORM = 1, 2, 3
_WORDS_AND_MARKS = re.compile(r"\w+|[\x00\x01]", re.UNICODE)
# ASCII text: \w+ words are what is left between these (3x faster than the regex)
_ASCII_SEPARATORS = str.maketrans({chr(i): " " for i in range(128) if not (
    chr(i).isalnum() or chr(i) in "_\x00\x01")})


def _stream(rows: Sequence[tuple[str | None, str | None]]) -> list[str]:
    """Every row's `lexical.words` in one pass, each row's text words then
    `_TEXT_END`, its attribute words then `_ROW_END`."""
    joined = "".join(f"{t or ''} \x01 {a or ''} \x00 " for t, a in rows).lower()
    if joined.isascii():
        return joined.translate(_ASCII_SEPARATORS).split()
    return _WORDS_AND_MARKS.findall(joined)


class _Scorer:
    """BM25 of many rows for one query. A row's words are looked up once each: only
    words that are one token matching a one-token phrase count (multi-token words or
    phrases, rare, take the general path)."""

    def __init__(self, weighted: list[tuple[Phrase, float]], known: dict[str, Phrase],
                 average: float) -> None:
        self.weighted, self.known = weighted, known
        self.norm_a, self.norm_b = K1 * (1 - B), K1 * B / average if average else 0.0
        self.general = any(len(p) != 1 for p, _ in weighted) or any(
            len(tokens) != 1 for tokens in known.values())
        by_token: dict[str, list[int]] = {}
        for i, (phrase, _) in enumerate(weighted):
            by_token.setdefault(phrase[0], []).append(i)
        # every word of the rows as a small code: 0 counts for no phrase, the marks have
        # theirs, and a word counting for phrases has a row of `self.counts`
        # (code - _FIRST_FORM): which phrases it counts for
        self.code = dict.fromkeys(known, 0) | {_TEXT_END: _TEXT_CODE, _ROW_END: _ROW_CODE}
        forms = [w for w, t in known.items() if len(t) == 1 and t[0] in by_token]
        self.counts = np.zeros((len(forms), len(weighted)))
        for i, w in enumerate(forms):
            self.code[w] = i + _FIRST_FORM
            self.counts[i, by_token[known[w][0]]] = 1.0

    def scores(self, stream: list[str]) -> list[float]:
        """`stream`: the rows' words, each row's text then attributes, marked."""
        if self.general:
            return [self._general(t, a) for t, a in _rows(stream)]
        # one C-level pass codes the stream; the rest is array work (a Python loop over
        # ~15 words a row was most of the scoring time)
        codes = np.fromiter(map(self.code.__getitem__, stream), dtype=np.int32,
                            count=len(stream))
        text_ends = np.flatnonzero(codes == _TEXT_CODE)  # stream positions, per row
        row_ends = np.flatnonzero(codes == _ROW_CODE)
        starts = np.concatenate(([0], row_ends[:-1] + 1))
        freq = np.zeros((len(row_ends), len(self.weighted)))  # [rows, phrases], weighted
        at = np.flatnonzero(codes >= _FIRST_FORM)
        if len(at):
            row = np.searchsorted(row_ends, at)
            weight = np.where(at < text_ends[row], lexical.TEXT_WEIGHT,
                              lexical.ATTRIBUTE_WEIGHT)
            np.add.at(freq, row, self.counts[codes[at] - _FIRST_FORM] * weight[:, None])
        norm = self.norm_a + self.norm_b * (row_ends - starts - 1)  # words: less the mark
        idf = np.array([idf for _, idf in self.weighted])
        return (idf * freq * (K1 + 1) / (freq + norm[:, None])).sum(axis=1).tolist()

    def _general(self, text_words: list[str], attribute_words: list[str]) -> float:
        average = K1 * B / self.norm_b if self.norm_b else 0.0
        return _score(_flat(text_words, self.known), _flat(attribute_words, self.known),
                      self.weighted, average)


def _rows(stream: list[str]) -> list[tuple[list[str], list[str]]]:
    rows: list[tuple[list[str], list[str]]] = []
    text_words: list[str] = []
    current: list[str] = []
    for word in stream:
        if word == _ROW_END:
            rows.append((text_words, current))
            text_words, current = [], []
        elif word == _TEXT_END:
            text_words, current = current, []
        else:
            current.append(word)
    return rows


def _idf(rows: int, hits: int) -> float:
    idf = math.log((rows - hits + 0.5) / (hits + 0.5))
    return idf if idf > 0 else IDF_FLOOR


def _flat(words: list[str], known: dict[str, Phrase]) -> list[str]:
    return [token for w in words for token in known[w]]


def _count(tokens: list[str], phrase: Phrase) -> int:
    if len(phrase) == 1:
        return tokens.count(phrase[0])
    n = len(phrase)
    return sum(1 for i in range(len(tokens) - n + 1) if tuple(tokens[i:i + n]) == phrase)


def _score(text_tokens: list[str], attribute_tokens: list[str],
           weighted: list[tuple[Phrase, float]], average: float) -> float:
    length = len(text_tokens) + len(attribute_tokens)
    norm = K1 * (1 - B + B * length / average) if average else K1
    score = 0.0
    for phrase, idf in weighted:
        f = (lexical.TEXT_WEIGHT * _count(text_tokens, phrase)
             + lexical.ATTRIBUTE_WEIGHT * _count(attribute_tokens, phrase))
        if f:
            score += idf * f * (K1 + 1) / (f + norm)
    return score
