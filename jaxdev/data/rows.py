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
                    rng: np.random.Generator, length: int = 0) -> np.ndarray:
  """Rows of which a ``fraction`` carry a random block repeated twice (a copy is returned).

  Each row is chosen with probability ``fraction``; in a chosen row ``[BOS, t_1, ..., t_{L-1}]``
  a block r of ``length`` tokens drawn uniformly (with replacement) from ``pool`` overwrites two
  stretches: the second copy can be predicted only by looking back at the first, which is what
  an induction head does. Unchosen rows are left as they are.

  - ``length=0``: h = (L − 1) // 2 and the row becomes ``[BOS, r_1..r_h, r_1..r_h, ...]``: the
    copies always at the same places, so a model may also learn to copy by position alone.
  - ``length=h > 0`` (2h ≤ L − 1): the first copy starts at s uniform in [1, L − 2h] and the
    second at t uniform in [s + h, L − h], so only the content tells where to look.

  Args:
    rows: [N, L] int token rows, BOS first.
    fraction: in [0, 1].
    pool: [P] token ids the blocks are drawn from (e.g. the tokens of the training rows other
      than BOS, so that every block token has a trained embedding).
    rng: the generator; the same state gives the same rows.
    length: the block length, 0 for half the row at fixed places (above).

  Returns:
    [N, L] rows of the same dtype.
  """
  rows = np.array(rows, copy=True)
  width = rows.shape[1]
  half = length or (width - 1) // 2
  if not 1 <= half <= (width - 1) // 2:
    raise ValueError(f"a repeated block of {half} tokens does not fit twice in rows of {width}")
  chosen = np.flatnonzero(rng.random(len(rows)) < fraction)
  blocks = rng.choice(np.asarray(pool), size=(len(chosen), half))
  if length:
    first = rng.integers(1, width - 2 * half + 1, size=len(chosen))
    second = first + half + (rng.random(len(chosen)) * (width - 2 * half - first + 1)).astype(int)
  else:
    first = np.ones(len(chosen), int)
    second = first + half
  for row, block, s, t in zip(chosen, blocks, first, second):
    rows[row, s:s + half] = block
    rows[row, t:t + half] = block
  return rows
