"""In-context linear regression training configurations (docs/methods.md, "The settings").

Variants, chosen as ``--config configs/regression.py:VARIANT`` on the command line or as
``jaxdev.configs.regression.get_config(VARIANT)`` in Python:
  paper: the paper's run (batch 256, 500k steps, one-cycle Adam to 3e-3, 190 checkpoints).
  quick: the same model on a 2-core CPU in a few minutes, long enough to show the first
         developmental stages (see the comments on its numbers below).
  tiny:  a seconds-long run for tests.
Override any field on the command line, e.g. ``--config.seed=3``.
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
  """Returns the training config for variant ``arg`` (paper | quick | tiny)."""
  config = ml_collections.ConfigDict()
  config.task = "regression"  # which setting; selects data and model code
  config.seed = 0  # seeds initialisation and the training data stream

  config.data = ml_collections.ConfigDict()
  config.data.dim = 4  # D: input dimension of each task
  config.data.num_examples = 8  # K: (x, y) examples per sequence (2K tokens)
  config.data.noise_variance = 0.125  # σ²: label-noise variance
  config.data.num_tasks = 0  # M: size of a finite task pool; 0 = a fresh task per sequence (M = ∞)

  config.model = ml_collections.ConfigDict()
  config.model.num_layers = 2  # transformer blocks
  config.model.num_heads = 4  # attention heads per block (head size = embed_dim / num_heads)
  config.model.embed_dim = 64  # residual-stream width
  config.model.mlp_dim = 64  # MLP hidden width

  config.optim = ml_collections.ConfigDict()
  config.optim.batch_size = 256  # sequences per step, freshly sampled every step
  config.optim.num_steps = 500_000  # optimizer steps
  config.optim.peak_lr = 3e-3  # peak of the one-cycle learning rate
  config.optim.warmup_fraction = 0.5  # fraction of steps spent rising to the peak
  config.optim.div_factor = 249_999.0  # initial lr = peak_lr / div_factor
  config.optim.final_div_factor = 249_999.0  # final lr = initial lr / final_div_factor
  config.optim.b1 = 0.9  # Adam β1
  config.optim.b2 = 0.999  # Adam β2
  config.optim.weight_decay = 0.0  # decoupled weight decay (0 = plain Adam)

  config.checkpoint = ml_collections.ConfigDict()
  config.checkpoint.num_log = 100  # log-spaced checkpoint steps over [1, num_steps]
  config.checkpoint.num_linear = 100  # linear-spaced checkpoint steps over [0, num_steps]

  config.eval = ml_collections.ConfigDict()
  config.eval.num_sequences = 4096  # fixed evaluation set, evaluated at every checkpoint step
  config.eval.seed = 1_000  # seed of the evaluation set (distinct from training and sampling)

  config.ed = ml_collections.ConfigDict()
  config.ed.every = 100  # essential-dynamics probe interval in steps (5,001 probes for the paper)
  config.ed.num_sequences = 128  # fixed probe inputs; the probe stores all [16, 5] outputs of each
  config.ed.seed = 2_000  # seed of the probe inputs

  config.log_every = 100  # training loss / lr logging interval in steps

  if arg == "paper":
    pass
  elif arg == "quick":
    # Batch 64 and 5,000 steps keep the run short on a CPU. With the same one-cycle
    # schedule the model first learns to predict ~0 (the task-prior mean: loss ≈ E[y²] = 4.1 at
    # every position), then learns in context: by the end the position-8 loss is far below the
    # position-1 loss, which stays near the prior level. The peak lr is the paper's.
    config.optim.batch_size = 64
    config.optim.num_steps = 5_000
    # 20 + 20 spacing gives 38 distinct checkpoints, dense in the early steps where the
    # first stages happen, few enough for the CPU LLC sweep of the default main job.
    config.checkpoint.num_log = 20
    config.checkpoint.num_linear = 20
    config.eval.num_sequences = 2048
    config.ed.every = 10  # 501 probes: enough points for smoothing and curvature
    config.ed.num_sequences = 64
    config.log_every = 50
  elif arg == "tiny":
    config.model.num_layers = 1
    config.model.embed_dim = 16
    config.model.mlp_dim = 16
    config.optim.batch_size = 32
    config.optim.num_steps = 60
    config.optim.peak_lr = 1e-2
    config.checkpoint.num_log = 6
    config.checkpoint.num_linear = 4
    config.eval.num_sequences = 256
    config.ed.every = 5
    config.ed.num_sequences = 8
    config.log_every = 10
  else:
    raise ValueError(f"unknown config variant {arg!r} for regression (choose paper, quick, tiny)")
  return config
