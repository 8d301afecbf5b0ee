"""Cost of the curvature indicators on the paper's regression model (51,717 parameters)."""

from __future__ import annotations

import jax

from jaxdev.configs import regression as regression_configs
from jaxdev.indicators import hessian
from jaxdev.indicators import regression
from jaxdev.models import regression as regression_model

PAPER_NUM_CHECKPOINTS = 190


def paper_regression_curvature(*, num_sequences: int = 1024, num_probes: int = 100,
                               num_eigenvalues: int = 3, seed: int = 0) -> dict:
  """Times Hutchinson trace + top eigenvalues at the paper model's initialisation on a fixed
  batch of ``num_sequences`` sequences (the authors used 1,024), compilation excluded.

  Returns :func:`jaxdev.indicators.hessian.benchmark_curvature`'s dict plus ``num_params``
  (51,717), the backend and ``seconds_per_paper_run`` (× 190 checkpoints).
  """
  config = regression_configs.get_config("paper")
  model = regression.build_model(config)
  params = regression.init(config, jax.random.PRNGKey(seed))
  batch = regression.hessian_batch(config, num_sequences)
  out = hessian.benchmark_curvature(regression.loss_fn(model), params, batch,
                                    num_probes=num_probes, num_eigenvalues=num_eigenvalues,
                                    seed=seed)
  out.update(model_params=regression_model.count_params(params), backend=jax.default_backend(),
             num_devices=jax.device_count(),
             seconds_per_paper_run=out["seconds_per_checkpoint"] * PAPER_NUM_CHECKPOINTS)
  return out
