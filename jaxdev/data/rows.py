"""Documents to fixed-length token rows, each beginning with BOS (docs/methods.md, "The settings").

Documents -> token ids (:mod:`jaxdev.data.tokenizer`) -> one stream per split, documents
separated by ``<|endoftext|>`` -> rows, as TransformerLens' ``tokenize_and_concatenate(...,
add_bos_token=True)`` does: a row is BOS followed by the next ``row_length - 1`` tokens of the
stream, and the tail shorter than a row is dropped.

Row length: the paper's rows are 1,024 tokens; a model with context n_ctx reads
``rows[:, :-1]`` and predicts ``rows[:, 1:]``, so 1,024-token rows train 1,023 positions exactly as
TransformerLens' loss does, and ``row_length = n_ctx + 1`` trains all n_ctx positions.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from jaxdev.data import tokenizer as tokenizer_lib

_ENCODE_CHUNK = 256  # documents tokenized per encode_batch call


def pack_rows(token_docs: Iterable[np.ndarray], row_length: int, bos_id: int) -> Iterator[np.ndarray]:
  """Concatenates documents into rows ``[BOS, t_1, ..., t_{row_length-1}]``.

  The stream is ``doc_0, BOS, doc_1, BOS, ...`` (BOS doubles as the document separator, as
  ``<|endoftext|>`` does in GPT-2); each row takes the next ``row_length - 1`` stream tokens. The
  tail shorter than a row is dropped.
  """
  if row_length < 2:
    raise ValueError(f"row_length must be >= 2, got {row_length}")
  body = row_length - 1
  pending: list[np.ndarray] = []
  num_pending = 0
  first = True
  for doc in token_docs:
    piece = doc if first else np.concatenate([[bos_id], doc])
    first = False
    pending.append(np.asarray(piece, np.int64))
    num_pending += len(piece)
    if num_pending >= body:
      stream = np.concatenate(pending)
      num_rows = len(stream) // body
      for r in range(num_rows):
        yield np.concatenate([[bos_id], stream[r * body:(r + 1) * body]])
      rest = stream[num_rows * body:]
      pending, num_pending = [rest], len(rest)


def token_documents(texts: Iterable[str], tokenizer: tokenizer_lib.TextTokenizer) -> Iterator[np.ndarray]:
  """Token ids of each document (no BOS), tokenized in parallel chunks."""
  chunk: list[str] = []
  for text in texts:
    chunk.append(text)
    if len(chunk) == _ENCODE_CHUNK:
      yield from tokenizer.encode_batch(chunk)
      chunk = []
  if chunk:
    yield from tokenizer.encode_batch(chunk)


def storage_dtype(vocab_size: int):
  """The narrowest dtype rows of ``vocab_size`` ids are stored in."""
  return np.uint16 if vocab_size <= 2**16 else np.int32


def repeated_blocks(rows: np.ndarray, *, fraction: float, pool: np.ndarray,
                    rng: np.random.Generator, length: int = 0, copies: int = 2) -> np.ndarray:
  """Rows of which a ``fraction`` carry a random block repeated ``copies`` times (a copy is
  returned).

  Each row is chosen with probability ``fraction``; in a chosen row ``[BOS, t_1, ..., t_{L-1}]``
  a block r of h tokens drawn uniformly (with replacement) from ``pool`` overwrites ``copies``
  disjoint stretches: every copy after the first can be predicted only by looking back at an
  earlier one, which is what an induction head does. Unchosen rows are left as they are.

  - ``length=0``: h = (L − 1) // copies and the row becomes ``[BOS, r, r, ..., rest]``: the
    copies always at the same places, so a model may also learn to copy by position alone.
  - ``length=h > 0`` (copies·h ≤ L − 1): the copies sit at random places: the free
    L − 1 − copies·h tokens are split into copies + 1 gaps by ``copies`` sorted uniform draws
    from {0, ..., L − 1 − copies·h}, so the offsets between copies vary from row to row and only
    the content tells where to look.

  Args:
    rows: [N, L] int token rows, BOS first.
    fraction: in [0, 1].
    pool: [P] token ids the blocks are drawn from (e.g. the tokens of the training rows other
      than BOS, so that every block token has a trained embedding).
    rng: the generator; the same state gives the same rows.
    length: the block length, 0 for fixed places (above).
    copies: how many times the block occurs in a chosen row (≥ 2).

  Returns:
    [N, L] rows of the same dtype.
  """
  rows = np.array(rows, copy=True)
  width = rows.shape[1]
  if copies < 2:
    raise ValueError(f"a repeated block needs at least 2 copies, got {copies}")
  size = length or (width - 1) // copies
  if not 1 <= size or copies * size > width - 1:
    raise ValueError(f"a repeated block of {size} tokens does not fit {copies} times in rows of "
                     f"{width}")
  chosen = np.flatnonzero(rng.random(len(rows)) < fraction)
  blocks = rng.choice(np.asarray(pool), size=(len(chosen), size))
  offsets = size * np.arange(copies)
  if length:
    gaps = np.sort(rng.integers(0, width - 1 - copies * size + 1, size=(len(chosen), copies)),
                   axis=1)
    starts = 1 + gaps + offsets
  else:
    starts = np.broadcast_to(1 + offsets, (len(chosen), copies))
  for row, block, row_starts in zip(chosen, blocks, starts):
    for start in row_starts:
      rows[row, start:start + size] = block
  return rows
