"""Bigram statistics of token rows: the counts and the loss of the ideal bigram model."""

from __future__ import annotations

import dataclasses
from typing import Iterable

import numpy as np
import scipy.sparse


@dataclasses.dataclass(frozen=True)
class BigramTable:
  """Empirical bigram statistics of a token stream.

  Attributes:
    counts: sparse ``[V, V]`` matrix, ``counts[a, b]`` = number of times ``b`` follows ``a``
      inside a row (the pairs a next-token loss is computed on).
  """

  counts: scipy.sparse.csr_matrix

  @property
  def vocab_size(self) -> int:
    """Number of token ids V."""
    return self.counts.shape[0]

  @property
  def num_pairs(self) -> int:
    """Number of (previous, next) pairs counted."""
    return int(self.counts.sum())

  def entropy(self) -> float:
    """Conditional entropy H(next | previous) in nats: the loss of the ideal bigram model."""
    counts = self.counts.tocoo()
    row_totals = np.asarray(self.counts.sum(axis=1)).ravel()
    c = counts.data.astype(np.float64)
    return float(-(c * np.log(c / row_totals[counts.row])).sum() / c.sum())

  def conditional(self, previous: np.ndarray) -> np.ndarray:
    """Dense ``p(next | previous)`` rows ``[len(previous), V]``; unseen tokens get zeros."""
    previous = np.asarray(previous).ravel()
    rows = self.counts[previous].toarray().astype(np.float64)
    totals = rows.sum(axis=1, keepdims=True)
    return np.divide(rows, totals, out=np.zeros_like(rows), where=totals > 0)


def bigram_table(rows: Iterable[np.ndarray], vocab_size: int) -> BigramTable:
  """Counts next-token pairs in batches of rows (each ``[B, L]`` or ``[L]``)."""
  total = scipy.sparse.csr_matrix((vocab_size, vocab_size), dtype=np.int64)
  for batch in rows:
    batch = np.asarray(batch)
    if batch.ndim == 1:
      batch = batch[None]
    prev, nxt = batch[:, :-1].ravel(), batch[:, 1:].ravel()
    chunk = scipy.sparse.coo_matrix((np.ones(prev.size, np.int64), (prev, nxt)),
                                    shape=(vocab_size, vocab_size))
    total = total + chunk.tocsr()
  return BigramTable(total.tocsr())
