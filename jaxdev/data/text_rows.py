"""Token rows as a tensorflow-datasets builder (ArrayRecord files), and reading them back.

Rows (:mod:`jaxdev.data.rows`) of a corpus (:mod:`jaxdev.data.corpora`) are written by the
builder :class:`TokenizedTextRows` in the ArrayRecord file format and read back with
``builder.as_data_source`` (and grain, :mod:`jaxdev.data.batches`), so TensorFlow is never
imported (``tfds.as_numpy`` and ``as_dataset`` would need it). A builder config,
:class:`TextRowsConfig`, is named by a digest of the corpus files, the tokenizer and the row
length, so another corpus or tokenizer never reuses stale rows.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import os
import pathlib
import re
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from jaxdev.data import corpora
from jaxdev.data import rows as rows_lib
from jaxdev.data import tokenizer as tokenizer_lib

_SHARD_BYTES = 256 << 20  # about 256 MB of rows per ArrayRecord shard


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
                                           dtype=rows_lib.storage_dtype(config.vocab_size),
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
      sources = {s: (lambda s=s: corpora.kjv_documents(s)) for s in ("train", "test")}
    else:
      sources = {s: (lambda f=f: corpora.file_documents(list(f), config.text_field))
                 for s, f in config.splits}
    scratch_dir = pathlib.Path(dl_manager.download_dir)
    scratch_dir.mkdir(parents=True, exist_ok=True)
    return {split: self._shards(texts(), scratch_dir / f"{config.name}-{split}.rows")
            for split, texts in sources.items()}

  def _shards(self, texts, path: pathlib.Path):
    """Tokenizes a split into a flat row file; returns one generator function per shard."""
    config = self.builder_config
    dtype = rows_lib.storage_dtype(config.vocab_size)
    self._scratch.append(path)
    num_rows = 0
    with open(path, "wb") as f:
      documents = rows_lib.token_documents(texts, self._tokenizer)
      for row in rows_lib.pack_rows(documents, config.row_length, self._tokenizer.bos_id):
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
    :func:`row_source` / :class:`jaxdev.data.batches.TokenBatches`.
  """
  if corpus == "files":
    if not splits:
      raise ValueError('corpus="files" needs splits={"train": [patterns], ...}')
    split_files = tuple((name, tuple(corpora.expand_files(p))) for name, p in splits.items())
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
  config = TextRowsConfig(name=re.sub(r"[^a-zA-Z0-9_.-]", "_", name), corpus=corpus,
                      splits=split_files, text_field=text_field,
                      tokenizer_name=tokenizer.name, tokenizer_digest=digest,
                      vocab_size=tokenizer.vocab_size, row_length=row_length, max_rows=max_rows)
  with _quiet_custom_config_warning():
    return TokenizedTextRows(config=config, data_dir=os.fspath(data_dir), file_format="array_record",
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
      texts = corpora.kjv_documents("train")
    else:
      files = corpora.expand_files(_patterns(data_config.train_files))
      texts = corpora.file_documents(files, data_config.text_field)
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
