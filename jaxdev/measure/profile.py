"""Where the time of one SGLD step goes: the step taken apart and each part timed alone.

:func:`sgld_step_profile` times, on the regression model of a config, the same loop as
:func:`jaxdev.sgld.run_chains` (``lax.scan`` over draws, chains vmapped) with less and less of
the step inside it:

  ``gather``          draw the minibatch indices and gather the batch (summed, so it is read)
  ``forward``         + the minibatch loss
  ``forward_backward``+ its gradient (a vanishing step along it keeps every part live)
  ``noise``           only the Gaussian noise of the step, drawn for every parameter and added
  ``step``            the whole SGLD step of :func:`jaxdev.sgld.run_chains`, with its diagnostics

and reports milliseconds per chain-step for each, with the parts by difference: the forward
pass (``forward − gather``), the backward pass (``forward_backward − forward``), and the rest
of the step (``step − forward_backward``: noise, update, localization, the per-draw norms).
XLA fuses differently when parts are left out, so the differences are estimates; ``noise``
alone bounds what the noise can cost.

:func:`train_step_profile` does the same for the training step: the forward pass and the
gradient on a training batch, against the whole optimizer step of the run's own program.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdev.measure import timing
from jaxdev.measure.timing import machine


def regression_sampling(config, num_examples: int, matmul_dtype: str = "float32"):
  """(task, params, data): the regression model of ``config`` with its dense products in
  ``matmul_dtype``, freshly initialised parameters (key 0) and a sampling set of
  ``num_examples`` sequences (seed 0), as the sampler's benchmarks time it."""
  from jaxdev import tasks  # pylint: disable=import-outside-toplevel
  task = tasks.make_task(config, matmul_dtype=matmul_dtype)
  params = task.init(jax.random.key(0))
  data = task.sampling_data(0, num_examples)
  return task, params, data


def _per_chain_step(fn, args, repeats: int, count: int) -> float:
  """Milliseconds per chain-step of ``fn(*args)``, which runs ``count`` of them."""
  return 1e3 * timing.time_compiled(fn, args, repeats)[0] / count


def sgld_step_profile(config, *, batch_size: int, num_chains: int, num_draws: int,
                      repeats: int = 3, matmul_dtype: str = "float32") -> dict:
  """Milliseconds per chain-step of each part of the SGLD step (module docstring).

  Returns:
    A JSON-able dict: ``ms_per_chain_step`` {gather, forward, forward_backward, noise, step},
    ``parts_ms`` {gather, forward, backward, rest} (differences), ``parts_share`` (each part
    over ``step``), and the sizes and machine.
  """
  from jaxdev import sgld  # pylint: disable=import-outside-toplevel
  from jaxdev.sgld import chains  # pylint: disable=import-outside-toplevel
  task, params, data = regression_sampling(config, max(8 * batch_size, 8192), matmul_dtype)
  size = chains.num_examples(data)
  keys = jax.random.split(jax.random.key(1), num_chains)
  value_and_grad = jax.value_and_grad(task.loss_fn)

  def loop(body):
    """The sampler's loop structure around ``body(carry, batch key, noise key) -> carry``."""
    def run(params, data, keys):
      def one_chain(key):
        def step(carry, t):
          batch_key, noise_key = chains.draw_keys(key, t)
          return body(carry, data, batch_key, noise_key), None
        return jax.lax.scan(step, (params, jnp.zeros((), jnp.float32)),
                            jnp.arange(num_draws))[0]
      return jax.vmap(one_chain)(keys)
    return run

  def batch_of(data, key):
    return chains.minibatch(data, key, batch_size, size)

  def gather(carry, data, batch_key, _):
    total = sum(jnp.sum(x.astype(jnp.float32)) for x in jax.tree.leaves(batch_of(data, batch_key)))
    return carry[0], carry[1] + total

  def forward(carry, data, batch_key, _):
    return carry[0], carry[1] + task.loss_fn(carry[0], batch_of(data, batch_key))

  def forward_backward(carry, data, batch_key, _):
    loss, grad = value_and_grad(carry[0], batch_of(data, batch_key))
    return jax.tree.map(lambda w, g: w - 1e-12 * g, carry[0], grad), carry[1] + loss

  def noise(carry, data, _, noise_key):
    leaves, treedef = jax.tree.flatten(carry[0])
    draws = jax.random.split(noise_key, len(leaves))
    moved = [w + 1e-6 * jax.random.normal(k, w.shape, w.dtype) for w, k in zip(leaves, draws)]
    return jax.tree.unflatten(treedef, moved), carry[1]

  def full(params, data, keys):
    return sgld.run_chains(task.loss_fn, params, data, keys, num_draws=num_draws,
                           step_size=3e-4, nbeta=66.67, gamma=6.67, batch_size=batch_size).loss

  count = num_chains * num_draws
  args = (params, data, keys)
  ms = {name: _per_chain_step(loop(body), args, repeats, count)
        for name, body in (("gather", gather), ("forward", forward),
                           ("forward_backward", forward_backward), ("noise", noise))}
  ms["step"] = _per_chain_step(full, args, repeats, count)
  parts = {"gather": ms["gather"], "forward": ms["forward"] - ms["gather"],
           "backward": ms["forward_backward"] - ms["forward"],
           "rest": ms["step"] - ms["forward_backward"]}
  return {"benchmark": "profile", "program": "sgld", "batch_size": batch_size,
          "num_chains": num_chains, "num_draws": num_draws, "matmul_dtype": matmul_dtype,
          "ms_per_chain_step": ms, "parts_ms": parts,
          "parts_share": {k: v / ms["step"] for k, v in parts.items()}, **machine()}


def train_step_profile(config, *, num_steps: int = 16, repeats: int = 3) -> dict:
  """Milliseconds per training step: the forward pass and forward + backward on one training
  batch (scanned over ``num_steps`` batches), against the run's whole optimizer step
  (:func:`jaxdev.measure.costs.training_call`: batch drawing, gradient, AdamW update).

  Returns:
    A JSON-able dict: ``ms_per_step`` {forward, forward_backward, step}, ``parts_ms``
    {forward, backward, rest}, ``parts_share``, and the machine.
  """
  from jaxdev import train  # pylint: disable=import-outside-toplevel
  from jaxdev.measure import costs  # pylint: disable=import-outside-toplevel
  train.validate_config(config)
  task = train.make_task(config)
  program = costs.training_call(task, config, num_steps=num_steps)
  step_ms = 1e3 * timing.median_seconds(program.call, repeats) / program.length
  params = program.params
  if task.host_batch is not None:  # text rows, read on the host
    batches = jnp.stack([jnp.asarray(task.host_batch(s)) for s in range(program.length)])
  else:  # regression: batches drawn inside the step from a key
    batches = jax.vmap(task.train_batch)(jax.random.split(jax.random.key(0), program.length))
  value_and_grad = jax.value_and_grad(task.loss_fn)

  def forward(params, batches):
    return jax.lax.scan(lambda c, b: (c + task.loss_fn(params, b), None),
                        jnp.zeros((), jnp.float32), batches)[0]

  def forward_backward(params, batches):
    def body(carry, batch):
      loss, grad = value_and_grad(carry[0], batch)
      return (jax.tree.map(lambda w, g: w - 1e-12 * g, carry[0], grad), carry[1] + loss), None
    return jax.lax.scan(body, (params, jnp.zeros((), jnp.float32)), batches)[0]

  ms = {"forward": _per_chain_step(forward, (params, batches), repeats, program.length),
        "forward_backward": _per_chain_step(forward_backward, (params, batches), repeats,
                                            program.length),
        "step": step_ms}
  parts = {"forward": ms["forward"], "backward": ms["forward_backward"] - ms["forward"],
           "rest": ms["step"] - ms["forward_backward"]}
  return {"benchmark": "profile", "program": "train", "task": config.task,
          "batch_size": config.optim.batch_size, "ms_per_step": ms, "parts_ms": parts,
          "parts_share": {k: v / ms["step"] for k, v in parts.items()}, **machine()}
