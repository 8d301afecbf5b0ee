"""Batches of token rows addressed by index (grain), and fixed rows for evaluation and probes.

Data position: :class:`TokenBatches` addresses batch ``i`` directly (``batches[i]``), so a resumed
run that stores the integer step sees exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np


class TokenBatches:
  """Batches of rows, addressable by batch index, read through grain.

  ``batches[i]`` is batch ``i`` (int32 ``[batch_size, row_length]``); it depends only on ``i``,
  the source and the constructor arguments, so the integer step is a complete data position for
  resuming. Rows are read in source order (the paper's one epoch in file order) unless
  ``shuffle_seed`` is given, in which case each epoch is a different fixed permutation. The tail
  of the last epoch that does not fill a batch is dropped.

  Example:
    >>> batches = TokenBatches(text_rows.row_source(builder, "train"), batch_size=100)
    >>> first = batches[0]                      # (100, row_length) int32
    >>> for batch in batches.iterate(start=step): ...
  """

  def __init__(self, source, batch_size: int, *, num_epochs: int = 1,
               shuffle_seed: int | None = None):
    import grain  # pylint: disable=import-outside-toplevel
    if batch_size < 1 or num_epochs < 1:
      raise ValueError("batch_size and num_epochs must be positive")
    self.batch_size = batch_size
    self.num_rows = len(source)
    dataset = grain.MapDataset.source(source)
    if shuffle_seed is not None:
      dataset = dataset.shuffle(seed=shuffle_seed)  # indices past one epoch get a new permutation
    if num_epochs > 1:
      dataset = dataset.repeat(num_epochs)
    dataset = dataset.map(_row_as_int32)
    self._dataset = dataset.batch(batch_size, drop_remainder=True)

  def __len__(self) -> int:
    return len(self._dataset)

  def __getitem__(self, index: int) -> np.ndarray:
    if not 0 <= index < len(self):
      raise IndexError(f"batch {index} out of range ({len(self)} batches)")
    return self._dataset[index]

  def iterate(self, start: int = 0, *, prefetch_threads: int = 4) -> Iterator[np.ndarray]:
    """Batches ``start, start + 1, ...`` to the end, read ahead on background threads."""
    import grain  # pylint: disable=import-outside-toplevel
    remaining = self._dataset[start:]
    options = grain.ReadOptions(num_threads=prefetch_threads, prefetch_buffer_size=2 * prefetch_threads)
    return iter(remaining.to_iter_dataset(options))


def _row_as_int32(example) -> np.ndarray:
  return np.asarray(example["tokens"], dtype=np.int32)


def inputs_and_targets(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Model inputs ``rows[:, :-1]`` and next-token targets ``rows[:, 1:]``."""
  return rows[:, :-1], rows[:, 1:]


def read_rows(source, indices: Sequence[int], *, chunk: int = 4096) -> np.ndarray:
  """Rows ``source[i]`` for ``i`` in ``indices`` as one int32 array ``[len(indices), L]``.

  Reads in batched calls (``__getitems__``) where the source offers them.
  """
  indices = [int(i) for i in indices]
  rows = []
  for start in range(0, len(indices), chunk):
    part = indices[start:start + chunk]
    if hasattr(source, "__getitems__"):
      examples = source.__getitems__(part)
    else:
      examples = [source[i] for i in part]
    rows.extend(_row_as_int32(example) for example in examples)
  if not rows:
    return np.zeros((0, 0), np.int32)
  return np.stack(rows)


def probe_rows(source, num_sequences: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """Fixed essential-dynamics probe inputs: the first rows of a split and one position each.

  Returns:
    ``(rows [N, L] int32, positions [N])`` with N = min(num_sequences, len(source)) and
    positions uniform in ``[0, L - 2]`` (input positions that have a next token), drawn from
    ``seed`` alone so every probe step and every resumed run uses the same ones.
  """
  count = min(num_sequences, len(source))
  rows = read_rows(source, range(count))
  positions = np.random.default_rng(seed).integers(0, rows.shape[1] - 1, size=count)
  return rows, positions
