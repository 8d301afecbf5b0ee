"""LLC sweep configurations (docs/methods.md, "The estimator" and "Sampler options").

Variants, chosen as ``--config configs/llc.py:VARIANT`` on the command line or as
``jaxdev.configs.llc.get_config(VARIANT)`` in Python:
  paper: the paper's settings for the regression run (10 chains × 5,000 draws, ε 3e-4,
         nβ 66.67, γ 6.67, batch 1024, 2²⁰ sampling sequences, init loss on all of them).
  paper_cpu: the paper's ε, nβ, γ and sampling set with 4 chains × 500 draws at batch 64, for
         the paper run on a 2-core CPU (see below).
  paper_cpu_long: paper_cpu with 2,000 draws per chain, at a few checkpoints (``--steps``).
  paper_cpu_5k: paper_cpu with the paper's 5,000 draws per chain, at a few checkpoints.
  paper_check: the paper's ε, nβ, γ, sampling set and batch 1024 with 4 chains × 2,000 draws:
         the check of paper_cpu's reduction at a few checkpoints (``--steps``).
  quick: CPU-sized settings for the quick regression run (the default main job).
  tiny:  seconds-long settings for tests.
  language: the paper's LM sweep (20 chains × 200 draws, batch 100, nβ = 100/ln 100); ε and γ
         were not published for it (see below).
  language_quick: CPU-sized settings for the quick LM run (configs/language.py:quick).
  language_cpu: the CPU-scale LM run (configs/language.py:cpu): the whole-model sweep, one
         weight-restricted sweep per layer-2 head and one of layer 1 (every third checkpoint).
  language_cpu_random: the LM run configs/language.py:cpu_random: the whole-model sweep, each
         layer-2 head alone and layer 1 as a whole at 8 named checkpoints.
  language_cpu_ci: language_cpu shrunk to seconds (with configs/language.py:cpu_ci), for tests.
  language_cpu_random_ci: language_cpu_random shrunk to seconds (with
         configs/language.py:cpu_random_ci), for tests.
  language_tiny: seconds-long LM settings for tests.
"""

from __future__ import annotations

import ml_collections


def _shrink_to_seconds(config) -> None:
  """The CI-sized LM sweeps' chains and sampling set: seconds, not minutes."""
  config.sgld.num_draws = 10
  config.sgld.batch_size = 4
  config.sgld.num_sampling_examples = 256
  config.sgld.num_init_loss_batches = 4
  config.sweep.checkpoints_per_batch = 4


def get_config(arg: str = "paper") -> ml_collections.ConfigDict:
  """Returns the sweep config for variant ``arg`` (paper | paper_cpu | paper_cpu_long |
  paper_cpu_5k | paper_positions | paper_check | quick | quick_positions | tiny |
  language[_quick|_cpu|_cpu_random|_cpu_ci|_cpu_random_ci|_heads|_tiny])."""
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
  # A checkpoint is estimated only when more than this fraction of its chains survive (finite
  # loss throughout); otherwise its status is "failed" and it has no estimate.
  config.sgld.min_good_fraction = 0.5
  # The sampler's options (jaxdev.sgld.estimate_llc); the defaults are plain SGLD on every weight.
  config.sgld.weight_decay = 0.0  # λ_wd: Gaussian prior centred at 0, adds λ_wd·w to the drift
  # The weights the chains move, by parameter path ("block_0/attn/qkv/kernel"): shell-style globs
  # separated by commas, e.g. "*attn*" (every attention weight); "" = every weight. The others
  # stay at the checkpoint's values (the weight-restricted LLC); a glob matching nothing is an error.
  config.sgld.mask = ""
  config.sgld.preconditioner = "none"  # "none" (plain SGLD) or "rmsprop" (RMSProp-SGLD)
  config.sgld.rmsprop_alpha = 0.99  # RMSProp: decay of the running mean V of squared gradients
  config.sgld.rmsprop_eps = 0.1  # RMSProp: the step's scale is 1 / (√V + eps), at most 1 / eps
  config.sgld.bounding_box = 0.0  # b > 0 clips each step to |w − w*| ≤ b coordinatewise; 0 = none
  # MALA acceptance probability of the SGLD moves, recorded per chain as mala_acceptance:
  # "none", "consecutive" (free: each move from the chain's own losses and gradients) or
  # "same_batch" (one extra gradient per draw: both ends on the same minibatch).
  config.sgld.compute_mala = "none"
  # Quantities recorded at every draw of the same chains (jaxdev.tasks.Model.observables): "" (none)
  # or "positions" (the loss at each position; each record then holds the per-position LLCs,
  # which average to the LLC, and their susceptibilities).
  config.sgld.observables = ""
  # The regression model's dense products: "float32", or "bfloat16" inputs with float32 sums
  # (mixed precision; docs/performance.md measures its speed and its LLC against float32).
  config.sgld.matmul_dtype = "float32"

  config.sweep = ml_collections.ConfigDict()
  config.sweep.name = "default"  # results go to WORKDIR/llc/NAME
  config.sweep.checkpoints_per_batch = 8  # checkpoints sampled together in one call
  # Weight-restricted sweeps run after the main one, each into WORKDIR/llc/NAME-SUFFIX with the
  # same settings but only the restriction's weights moving: "" (none), "heads" (every attention
  # head, head:L.H), "layers" (layer:L) or masks separated by ';' (jaxdev.llc.restrictions).
  config.sweep.restrictions = ""
  config.sweep.restriction_every = 1  # restricted sweeps at every n-th checkpoint (and the last)
  config.sweep.restriction_steps = ""  # or at these checkpoint steps ("4800,5400,...")
  # The restrictions are sampled together in one program, with the same chain keys: "map" (one
  # after the other inside it) or "vmap" (one batched computation, for a device that the chains
  # and checkpoints alone do not fill; on a 2-core CPU it ran at 0.8x of "map": performance.md).
  config.sweep.restriction_map = "map"

  if arg == "paper":
    pass
  elif arg == "quick":
    # Sized for a CPU: the 38 checkpoints of the quick run × 4 chains × 160 draws are about
    # 24k chain-steps at batch 64 (docs/performance.md). ε, nβ and γ are the paper's;
    # at batch 64 the chains settle within ~100 draws on trained checkpoints of this model.
    config.sgld.num_chains = 4
    config.sgld.num_draws = 160
    config.sgld.batch_size = 64
    config.sgld.num_sampling_examples = 2 ** 14
    config.sgld.num_init_loss_batches = 0
    config.sweep.checkpoints_per_batch = 8
  elif arg == "quick_positions":
    # The quick sweep with the loss at each of the 8 positions recorded on its draws: the
    # per-position LLCs of the authors' files (the mean loss is the mean over positions, so
    # they average to the LLC; docs/methods.md, "Restricted LLCs and observables").
    config = get_config("quick")
    config.sgld.observables = "positions"
    config.sweep.name = "positions"
  elif arg in ("paper_cpu", "paper_cpu_long", "paper_cpu_5k"):
    # The paper's ε, nβ, γ and sampling set, reduced to fit a 2-core CPU: all 190 checkpoints of the
    # paper run in about 380k chain-steps at batch 64 (docs/performance.md times it). Its length was
    # chosen on the paper run's step-40,293 checkpoint (seed 0): at batch 64 the running mean of 4
    # chains × 2,000 draws reads 165.5 after 300 draws, 169.8 after 500 and 172.8 after 2,000, so
    # 500 draws sit within 2% of the 2,000-draw value (the authors' 10 × 5,000 at batch 1,024:
    # 169.6). Later checkpoints settle more slowly: past step ~50k 500 draws read far low (see
    # paper_cpu_long, paper_cpu_5k and docs/reproduction.md). L_n(w*) on the first 1,024 batches
    # (65,536 sequences): its error, ×nβ, is ≈ 0.1.
    config.sgld.num_chains = 4
    config.sgld.num_draws = 500
    config.sgld.batch_size = 64
    config.sgld.num_init_loss_batches = 1024
    config.sweep.name = "paper_cpu"
    # Two checkpoints per call: on the 2-core CPU split into one device per core (the scripts'
    # default) 283 chain-steps/s against 231 for one and 268 for four; on one device 188
    # against 150-160 for one (`scripts/benchmark.py sweep --checkpoints K`, docs/performance.md).
    config.sweep.checkpoints_per_batch = 2
    if arg == "paper_cpu_long":
      # paper_cpu with 2,000 draws per chain, for a subset of checkpoints (``--steps``): the same
      # chains for their first 500 draws (same seed), so the two sweeps show how far paper_cpu's
      # 500 draws are from settled. Past step ~50k of the paper run they are not: at step 126,263
      # the running mean reads 125 after 500 draws and 152 after 2,000 (the authors': 158).
      config.sgld.num_draws = 2_000
      config.sweep.name = "paper_cpu_long"
    elif arg == "paper_cpu_5k":
      # The same chains run to the paper's 5,000 draws (its estimator has no burn-in): whether
      # what is left between paper_cpu_long and the authors' curve late in training is the
      # chains' length alone, at batch 64 and 4 chains. It is: at 27 checkpoints of the paper
      # run (seed 0) from step 46k to 500k this reads the authors' curve, median difference
      # -0.1, largest 6.0 inside the chains' spread (docs/reproduction.md).
      config.sgld.num_draws = 5_000
      config.sweep.name = "paper_cpu_5k"
  elif arg == "paper_positions":
    # paper_cpu_5k (the paper's ε, nβ, γ and 5,000 draws; 4 chains at batch 64) with the loss at
    # each position recorded on the draws: per-position LLCs to set beside the authors'
    # llc_position_k (docs/reproduction.md). For a few checkpoints (``--steps``).
    config = get_config("paper_cpu_5k")
    config.sgld.observables = "positions"
    config.sweep.name = "paper_positions"
  elif arg == "paper_check":
    # What paper_cpu's reduction is measured against: the paper's batch and sampling set, and 4
    # chains × 2,000 draws (a quarter of the paper's chains, two fifths of its draws); the running
    # mean over each record's loss trace also gives the value after 500 draws at this batch.
    config.sgld.num_chains = 4
    config.sgld.num_draws = 2_000
    config.sweep.name = "paper_check"
    config.sweep.checkpoints_per_batch = 1
  elif arg == "tiny":
    config.sgld.num_chains = 2
    config.sgld.num_draws = 20
    config.sgld.batch_size = 16
    config.sgld.num_sampling_examples = 256
    config.sweep.checkpoints_per_batch = 4
  elif arg == "language":
    # ε and γ are the values of the authors' follow-up on the same architecture
    # (ε 1e-3, γ 100); run scripts/calibrate.py on a checkpoint of your run to confirm them
    # (docs/language.md, "Choosing ε and γ").
    config.sgld.step_size = 1e-3
    config.sgld.gamma = 100.0
    config.sgld.nbeta = 0  # 100 / ln 100 = 21.71
    config.sgld.num_chains = 20
    config.sgld.num_draws = 200
    config.sgld.batch_size = 100
    config.sgld.num_sampling_examples = 2 ** 16  # training rows (268 MB as int32 on each device)
    config.sgld.num_init_loss_batches = 100  # L_n(w*) on 10,000 rows
    config.sweep.checkpoints_per_batch = 4
  elif arg == "language_quick":
    # Chosen with scripts/calibrate.py on the quick LM run's last checkpoint (docs/language.md,
    # "Choosing ε and γ"): with nβ fixed at the paper's 21.71, ε ∈ {3e-4, 1e-3, 3e-3,
    # 1e-2} × γ ∈ {30, 100, 300}. No chain diverged; at ε ≤ 1e-3 the traces had not settled
    # within 100-150 draws, so 3e-3 is the smallest (least biased) step that settles; at 1e-2
    # the estimate rose by a fifth (step-size bias, which the paper's selection rule does not
    # see: it picks 1e-2 and γ 30). γ = 100, as in the paper-scale config, gives chains ten
    # times closer than γ = 30. Batch 8 rows (1,024 tokens) and 2 chains × 120 draws keep the
    # sweep of ~38 checkpoints short on a CPU (about 9k chain-steps).
    config.sgld.step_size = 3e-3
    config.sgld.gamma = 100.0
    config.sgld.nbeta = 21.71
    config.sgld.num_chains = 2
    config.sgld.num_draws = 120
    config.sgld.batch_size = 8
    config.sgld.num_sampling_examples = 2 ** 14  # every training row of the demo corpus
    config.sgld.num_init_loss_batches = 64
    config.sweep.checkpoints_per_batch = 8
  elif arg in ("language_cpu", "language_cpu_ci"):
    # Chosen with scripts/calibrate.py on the run's last checkpoint (docs/language.md, "A
    # CPU-scale run"): nβ 21.71 as for the quick run, ε ∈ {1e-3, 3e-3, 1e-2} × γ ∈ {100, 300},
    # 2 chains × 150 draws of 8 rows. Without LayerNorm the chains are far less stable than
    # the quick run's: every chain at ε ≥ 3e-3 and γ 100 diverged, at ε 1e-3 and γ 100 the
    # traces had not settled (λ̂ 140 and climbing); ε 1e-3 with γ 300 settles (λ̂ 41.7 ± 0.08)
    # and is what the paper's selection rule picks.
    config.sgld.step_size = 1e-3
    config.sgld.gamma = 300.0
    config.sgld.nbeta = 21.71
    # 2 chains × 100 draws (the γ-300 traces settle within ~50) keep the whole job under an
    # hour here (docs/language.md).
    config.sgld.num_chains = 2
    config.sgld.num_draws = 100
    config.sgld.batch_size = 8
    config.sgld.num_sampling_examples = 2 ** 15  # every training row of the corpus (29,987)
    config.sgld.num_init_loss_batches = 64
    config.sweep.checkpoints_per_batch = 8
    # The per-head LLCs of the follow-up paper on this architecture (Wang et al. 2024): each
    # head's weights alone move, the rest stay at w*. The eight heads of layer 2 (where
    # induction heads form) one by one and layer 1 as a whole, at every third checkpoint (and
    # the last): per-head sweeps of all 16 heads would double the job's time.
    config.sweep.restrictions = ";".join(f"head:1.{h}" for h in range(8)) + ";layer:0"
    config.sweep.restriction_every = 3
    if arg == "language_cpu_ci":
      config.sweep.restrictions = "heads"  # 2 layers × 2 heads
      config.sweep.restriction_every = 4
      _shrink_to_seconds(config)
  elif arg in ("language_cpu_random", "language_cpu_random_ci"):
    # The CPU-scale LM run with its repeated blocks at random places (configs/language.py:
    # cpu_random). Chosen with scripts/calibrate.py on its last checkpoint (docs/language.md):
    # nβ 21.71, ε ∈ {1e-3, 3e-3, 1e-2} × γ ∈ {100, 300}, 2 chains × 150 draws of 8 rows; every
    # chain at ε 1e-2 diverged, ε 1e-3 with γ 100 had not settled (λ̂ 154 and climbing) and the
    # selection rule picks ε 3e-3 with γ 100 (λ̂ 232 ± 0.7).
    config = get_config("language_cpu")
    config.sgld.step_size = 3e-3
    config.sgld.gamma = 100.0
    config.sgld.num_sampling_examples = 2 ** 14  # every training row of the corpus (11,878)
    # 4 chains × 100 draws (2 chains of the cpu run could not tell heads apart). Each layer-2
    # head alone and layer 1 as a whole at 8 checkpoints (one program group: 12 cost two, the
    # second padded), dense where the induction heads form (the ICL score falls between steps
    # 5,400 and 7,200), to keep the job within the hour.
    config.sgld.num_chains = 4
    config.sweep.restriction_every = 1
    config.sweep.restriction_steps = "0,3000,4800,5400,6000,6600,7200,24000"
    if arg == "language_cpu_random_ci":
      _shrink_to_seconds(config)
      config.sweep.restrictions = "head:1.0;head:1.1;layer:0"
      config.sweep.restriction_steps = "0,12,20,40"  # checkpoints of configs/language.py:cpu_random_ci
  elif arg == "language_heads":
    # The per-head LLCs of the authors' follow-up on this architecture (Wang et al. 2024): ε 1e-3,
    # γ 200, nβ 30, 4 chains × 200 draws of 32 rows, every head's weights alone moving (the rest at
    # w*), all heads at every checkpoint in one program (jaxdev.llc.sweep_restricted), beside the
    # whole model's LLC, with the per-position losses recorded on the main sweep's draws.
    config = get_config("language")
    config.sgld.step_size = 1e-3
    config.sgld.gamma = 200.0
    config.sgld.nbeta = 30.0
    config.sgld.num_chains = 4
    config.sgld.num_draws = 200
    config.sgld.batch_size = 32
    config.sgld.observables = "positions"
    config.sweep.restrictions = "heads"
  elif arg == "language_tiny":
    config.sgld.step_size = 1e-3
    config.sgld.gamma = 100.0
    config.sgld.nbeta = 0
    config.sgld.num_chains = 2
    config.sgld.num_draws = 10
    config.sgld.batch_size = 4
    config.sgld.num_sampling_examples = 256
    config.sgld.num_init_loss_batches = 4
    config.sweep.checkpoints_per_batch = 4
  else:
    raise ValueError(f"unknown config variant {arg!r} for llc (choose paper, paper_cpu, "
                     "paper_cpu_long, paper_cpu_5k, paper_positions, paper_check, quick, "
                     "quick_positions, tiny, language, language_quick, language_cpu, "
                     "language_cpu_random, language_cpu_ci, language_cpu_random_ci, language_heads, "
                     "language_tiny)")
  return config
