"""Near-duplicate detection by ROUGE-L F1, with rouge-score's exact semantics but fast.

Used by self-instruct (a new instruction must not resemble the pool or the run's earlier
instructions) and by decontamination (no training prompt may resemble a benchmark prompt).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import numpy as np
from rouge_score import rouge_scorer, tokenizers

# rouge-score computes F1 as 2PR/(P+R), which can land an ulp away from the exact 2·LCS/(n+m)
# (0.7 as 0.6999999999999998 or 0.7000000000000001); comparisons with the threshold allow for it.
_SLACK = 1e-9


class RougeDeduplicator:
    """Is a text a near-duplicate of any reference text?

    Near-duplicate means ROUGE-L F1 > threshold (`inclusive=False`, self-instruct's rule) or
    ≥ threshold (`inclusive=True`, the decontamination rule). Scores equal `rouge_score`'s
    RougeScorer(["rougeL"]) (same tokenizer, same LCS). The O(n·m) LCS only runs for references
    that can reach the threshold: F1 = 2·LCS/(n+m) and LCS ≤ |bag-of-words overlap|, and the
    overlap with every reference at once comes from an inverted index (token → references holding
    it, with counts), one vectorised update per distinct query token.
    """

    def __init__(self, references: Iterable[str], threshold: float, *, inclusive: bool = False) -> None:
        self.threshold = threshold
        self.inclusive = inclusive
        self._tokenizer = tokenizers.DefaultTokenizer(use_stemmer=False)
        self._references: list[list[str]] = []
        # token -> (reference indices, counts), appended to by `add`; numpy copies made on demand.
        self._postings: dict[str, tuple[list[int], list[int]]] = {}
        self._posting_arrays: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._lengths = np.zeros(0, dtype=np.int64)
        for text in references:
            self.add(text)

    def __len__(self) -> int:
        return len(self._references)

    def add(self, text: str) -> None:
        tokens = self._tokenizer.tokenize(text)
        index = len(self._references)
        self._references.append(tokens)
        for token, count in Counter(tokens).items():
            ids, counts = self._postings.setdefault(token, ([], []))
            ids.append(index)
            counts.append(count)

    def max_score(self, text: str) -> float:
        """The highest ROUGE-L F1 against any reference (exact; no early exit)."""
        tokens = self._tokenizer.tokenize(text)
        return max((self._score(tokens, ref) for ref in self._references), default=0.0)

    def is_duplicate(self, text: str) -> bool:
        tokens = self._tokenizer.tokenize(text)
        if not tokens:
            return False
        return any(self._reaches(self._score(tokens, self._references[i])) for i in self._candidates(tokens))

    def _candidates(self, tokens: list[str]) -> np.ndarray:
        """Indices of references whose F1 upper bound reaches the threshold, best bound first."""
        if len(self._lengths) != len(self._references):
            self._lengths = np.array([len(ref) for ref in self._references], dtype=np.int64)
        overlap = np.zeros(len(self._references), dtype=np.int64)  # [n_refs]
        for token, count in Counter(tokens).items():
            if token in self._postings:
                ids, counts = self._arrays(token)
                overlap[ids] += np.minimum(counts, count)
        bound = 2 * overlap / (len(tokens) + self._lengths)  # [n_refs] upper bounds on F1
        # The slack keeps references whose exact bound equals the threshold: rouge-score's float
        # F1 for them may land on either side of it, and its verdict is the one that counts.
        reachable = np.flatnonzero(bound >= self.threshold - _SLACK)
        return reachable[np.argsort(-bound[reachable], kind="stable")]

    def _arrays(self, token: str) -> tuple[np.ndarray, np.ndarray]:
        ids, counts = self._postings[token]
        cached = self._posting_arrays.get(token)
        if cached is None or len(cached[0]) != len(ids):
            cached = (np.array(ids, dtype=np.int64), np.array(counts, dtype=np.int64))
            self._posting_arrays[token] = cached
        return cached

    def _reaches(self, score: float) -> bool:
        if self.inclusive:
            return score >= self.threshold - _SLACK
        return score > self.threshold

    @staticmethod
    def _score(tokens: list[str], ref_tokens: list[str]) -> float:
        # rouge_score's own LCS scorer on pre-tokenized text (public API would re-tokenize both).
        return rouge_scorer._score_lcs(ref_tokens, tokens).fmeasure
