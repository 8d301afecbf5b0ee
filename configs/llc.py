"""LLC sweep configurations (SPEC §3).

Variants, chosen as ``--config configs/llc.py:VARIANT``:
  paper: the paper's settings for the regression run (10 chains × 5,000 draws, ε 3e-4,
         nβ 66.67, γ 6.67, batch 1024, 2²⁰ sampling sequences, init loss on all of them).
  quick: CPU-sized settings for the quick regression run (the default main job).
  tiny:  seconds-long settings for tests.
"""

import ml_collections


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
  """Returns the sweep config for variant ``arg`` (paper | quick | tiny)."""
  config = ml_collections.ConfigDict()
  config.sgld = ml_collections.ConfigDict()
  config.sgld.step_size = 3e-4  # ε
  config.sgld.nbeta = 66.67  # nβ (the product); 0 = m / ln m for batch size m
  config.sgld.gamma = 6.67  # γ, localization strength
  config.sgld.num_chains = 10  # chains per checkpoint
  config.sgld.num_draws = 5_000  # SGLD steps per chain, burn-in included
  config.sgld.num_burnin = 0  # leading draws dropped (the published curves most likely used 0)
  config.sgld.thin = 1  # keep every thin-th draw
  config.sgld.batch_size = 1024  # m, sequences per SGLD minibatch
  config.sgld.noise_level = 1.0  # scale of the injected Gaussian noise
  config.sgld.num_sampling_examples = 2 ** 20  # fixed sampling dataset drawn from the training distribution
  config.sgld.sampling_seed = 3_000  # seed of the sampling dataset
  config.sgld.num_init_loss_batches = 0  # batches for L_n(w*); 0 = the whole sampling dataset
  config.sgld.seed = 0  # seed of the chain keys, shared by every checkpoint

  config.sweep = ml_collections.ConfigDict()
  config.sweep.name = "default"  # results go to WORKDIR/llc/NAME
  config.sweep.checkpoints_per_batch = 8  # checkpoints sampled together in one call

  if arg == "paper":
    pass
  elif arg == "quick":
    # Sized so that the 38 checkpoints of the quick run take about four minutes on a 2-core
    # CPU (~110 chain-steps/s at batch 64): 4 chains × 160 draws. ε, nβ and γ are the paper's;
    # at batch 64 the chains settle within ~100 draws on trained checkpoints of this model.
    config.sgld.num_chains = 4
    config.sgld.num_draws = 160
    config.sgld.batch_size = 64
    config.sgld.num_sampling_examples = 2 ** 14
    config.sgld.num_init_loss_batches = 0
    config.sweep.checkpoints_per_batch = 8
  elif arg == "tiny":
    config.sgld.num_chains = 2
    config.sgld.num_draws = 20
    config.sgld.batch_size = 16
    config.sgld.num_sampling_examples = 256
    config.sweep.checkpoints_per_batch = 4
  else:
    raise ValueError(f"unknown config variant {arg!r} for llc (choose paper, quick, tiny)")
  return config
