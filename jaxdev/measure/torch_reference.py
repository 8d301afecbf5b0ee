"""The regression transformer in PyTorch, timed under devinterp (benchmark-only).

Used by ``scripts/benchmark.py devinterp`` and ``compare`` to measure the reference
implementation's SGLD throughput on the same machine as jaxdev's. Needs ``torch`` and
``devinterp`` (not package dependencies); only :mod:`jaxdev.measure.benchmarks` imports it.
"""

from __future__ import annotations

from jaxdev.measure import timing


def _model():
  from torch import nn  # pylint: disable=import-outside-toplevel
  import torch.nn.functional as F  # pylint: disable=import-outside-toplevel

  class Block(nn.Module):

    def __init__(self, width=64, heads=4):
      super().__init__()
      self.heads = heads
      self.ln1, self.ln2 = nn.LayerNorm(width), nn.LayerNorm(width)
      self.qkv = nn.Linear(width, 3 * width, bias=False)
      self.proj = nn.Linear(width, width, bias=False)
      self.fc, self.fc_out = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
      b, t, c = x.shape
      q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
      q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
      y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
      x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
      return x + self.fc_out(F.relu(self.fc(self.ln2(x))))

  class Model(nn.Module):

    def __init__(self):
      super().__init__()
      self.wte = nn.Linear(5, 64, bias=False)
      self.wpe = nn.Linear(16, 64, bias=False)
      self.blocks = nn.ModuleList([Block(), Block()])
      self.ln_f = nn.LayerNorm(64)
      self.head = nn.Linear(64, 5)

    def forward(self, tokens):
      x = self.wte(tokens) + self.wpe.weight.T[: tokens.shape[1]]
      for block in self.blocks:
        x = block(x)
      return self.head(self.ln_f(x))

  return Model()


def devinterp_throughput(*, batch_size: int, num_chains: int, num_draws: int,
                         num_examples: int = 8192) -> dict:
  """Chain-steps/s of devinterp's ``estimate_learning_coeff_with_summary`` on this model."""
  import warnings  # pylint: disable=import-outside-toplevel
  import torch  # pylint: disable=import-outside-toplevel
  from devinterp.optim.sgld import SGLD  # pylint: disable=import-outside-toplevel
  from devinterp.slt.sampler import estimate_learning_coeff_with_summary  # pylint: disable=import-outside-toplevel

  torch.manual_seed(0)
  model = _model()
  num_params = sum(p.numel() for p in model.parameters())
  xs = torch.randn(num_examples, 8, 4)
  ys = (xs @ torch.randn(num_examples, 4, 1)).squeeze(-1) + 0.125 ** 0.5 * torch.randn(num_examples, 8)
  tokens = torch.zeros(num_examples, 16, 5)
  tokens[:, 0::2, 1:] = xs
  tokens[:, 1::2, 0] = ys
  loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(tokens, ys),
                                       batch_size=batch_size, shuffle=True)

  def evaluate(model, batch):
    tokens, ys = batch
    loss = ((model(tokens)[:, 0::2, 0] - ys) ** 2).mean()
    return loss, {}

  kwargs = dict(evaluate=evaluate, sampling_method=SGLD,
                optimizer_kwargs=dict(lr=3e-4, nbeta=66.67, localization=6.67),
                num_chains=num_chains, num_burnin_steps=0, init_loss=1.0,
                device="cpu", verbose=False, online=False)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # devinterp warns about nβ and burn-in choices made on purpose
    estimate_learning_coeff_with_summary(model, loader, num_draws=20, **kwargs)  # warm-up
    seconds = timing.median_seconds(
        lambda: estimate_learning_coeff_with_summary(model, loader, num_draws=num_draws, **kwargs),
        1, warmup=0, sync=lambda result: result)
  return {"benchmark": "devinterp", "devinterp_function": "estimate_learning_coeff_with_summary",
          "batch_size": batch_size, "num_chains": num_chains, "num_draws": num_draws,
          "num_params": num_params, "chain_steps_per_s": num_chains * num_draws / seconds,
          "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
