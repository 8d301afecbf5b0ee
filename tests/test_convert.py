"""PyTorch converters against independent PyTorch models: TransformerLens' own HookedTransformer,
and the authors' regression transformer rebuilt here in their layout."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the converters' tests need the 'torch' extra")
transformer_lens = pytest.importorskip("transformer_lens", reason="needs the 'torch' extra")

from jaxdev.configs import regression as regression_configs  # noqa: E402
from jaxdev.convert import ConversionError  # noqa: E402
from jaxdev.convert import regression as convert_regression  # noqa: E402
from jaxdev.convert import transformer_lens as convert_tl  # noqa: E402
from jaxdev.data import regression as regression_data  # noqa: E402
from jaxdev.models import attention as attention_model  # noqa: E402
from jaxdev import tasks  # noqa: E402


def _randomize(module, seed):
  """Every parameter random (biases and LayerNorms too), so that each one's mapping matters."""
  generator = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for param in module.parameters():
      param.copy_(0.2 * torch.randn(param.shape, generator=generator))


def _max_relative(a, b):
  return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


# ------------------------------------------------------------------ TransformerLens

def _hooked_transformer(n_layers, n_ctx=128, d_vocab=500, seed=0):
  import warnings  # pylint: disable=import-outside-toplevel
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from transformer_lens import HookedTransformer, HookedTransformerConfig  # pylint: disable=import-outside-toplevel
    cfg = HookedTransformerConfig(n_layers=n_layers, d_model=256, n_heads=8, d_head=32,
                                  n_ctx=n_ctx, d_vocab=d_vocab, attn_only=True,
                                  normalization_type="LN", positional_embedding_type="shortformer",
                                  seed=seed)
    model = HookedTransformer(cfg)
  model.eval()
  _randomize(model, seed)
  return model


@pytest.mark.parametrize("n_layers", [2, 1])
def test_hooked_transformer_logits_match(n_layers):
  model = _hooked_transformer(n_layers)
  state_dict = model.state_dict()
  sizes = convert_tl.model_config(state_dict)
  assert sizes == dict(num_layers=n_layers, embed_dim=256, num_heads=8, head_dim=32,
                       context_length=128, vocab_size=500)
  convert_tl.check_config(model.cfg.to_dict())
  params = convert_tl.from_hooked_transformer(state_dict)
  jax_model = attention_model.AttnOnlyTransformer(
      num_layers=n_layers, d_model=256, num_heads=8, head_dim=32, n_ctx=128, vocab_size=500)
  expected_shapes = jax.tree.map(
      lambda x: x.shape, jax.eval_shape(jax_model.init, jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"])
  assert jax.tree.map(lambda x: x.shape, params) == expected_shapes

  tokens = np.random.default_rng(1).integers(0, 500, size=(3, 128))
  with torch.no_grad():
    reference = model(torch.from_numpy(tokens)).numpy()  # (B, T, V)
  logits = np.asarray(jax_model.apply({"params": params}, jnp.asarray(tokens, jnp.int32)))
  assert logits.shape == reference.shape
  assert _max_relative(logits, reference) < 1e-5
  # The positions matter (shortformer): the logits at a later position differ from a shifted input's.
  assert np.abs(reference).max() > 1.0


@pytest.mark.parametrize("n_layers", [2, 1])
def test_hooked_transformer_round_trip_is_bitwise(n_layers):
  model = _hooked_transformer(n_layers, n_ctx=64, d_vocab=300, seed=3)
  state_dict = model.state_dict()
  back = convert_tl.to_hooked_transformer(convert_tl.from_hooked_transformer(state_dict))
  parameters = dict(model.named_parameters())
  assert set(back) == set(parameters)
  for name, tensor in back.items():
    assert tensor.dtype == state_dict[name].dtype and tensor.shape == state_dict[name].shape
    assert torch.equal(tensor, state_dict[name]), name
  # The result loads into a fresh model, leaving only the buffers it builds itself.
  fresh = _hooked_transformer(n_layers, n_ctx=64, d_vocab=300, seed=4)
  missing, unexpected = fresh.load_state_dict(back, strict=False)
  assert not unexpected and all(k.endswith((".mask", ".IGNORE")) for k in missing)
  tokens = torch.randint(0, 300, (2, 64), generator=torch.Generator().manual_seed(0))
  with torch.no_grad():
    assert torch.equal(fresh(tokens), model(tokens))


def test_hooked_transformer_with_mlps_or_other_positions_is_refused():
  state_dict = dict(_hooked_transformer(1, n_ctx=16, d_vocab=50).state_dict())
  state_dict["blocks.0.mlp.W_in"] = torch.zeros(256, 1024)
  with pytest.raises(ConversionError, match="blocks.0.mlp.W_in"):
    convert_tl.from_hooked_transformer(state_dict)
  del state_dict["blocks.0.mlp.W_in"]
  state_dict["unembed.W_U"] = torch.zeros(256, 7)
  with pytest.raises(ConversionError, match="unembed.W_U"):
    convert_tl.from_hooked_transformer(state_dict)
  with pytest.raises(ConversionError, match="positional_embedding_type"):
    convert_tl.check_config({"attn_only": True, "normalization_type": "LN",
                             "positional_embedding_type": "standard"})
  with pytest.raises(ConversionError, match="normalization_type"):
    convert_tl.check_config({"attn_only": True, "normalization_type": "LNPre",
                             "positional_embedding_type": "shortformer"})


# ------------------------------------------------------------------ the authors' regression model

class _TheirAttention(torch.nn.Module):
  """Their MultiHeadedCausalSelfAttention (fused qkv viewed as (B, T, H, 3c)), with the output."""

  def __init__(self, embed_size, max_tokens, num_heads):
    super().__init__()
    self.num_heads, self.head_size = num_heads, embed_size // num_heads
    self.attention = torch.nn.Linear(embed_size, 3 * embed_size, bias=False)
    self.register_buffer("causal_mask", torch.log(torch.tril(torch.ones(max_tokens, max_tokens))))
    self.output = torch.nn.Linear(embed_size, embed_size, bias=False)

  def forward(self, x):
    batch, length, width = x.shape
    q, k, v = (self.attention(x).view(batch, length, self.num_heads, 3 * self.head_size)
               .transpose(-2, -3).split(self.head_size, dim=-1))  # (B, H, T, c) each
    scores = q @ k.transpose(-2, -1) / self.head_size ** 0.5 + self.causal_mask[:length, :length]
    y = torch.softmax(scores, dim=-1) @ v  # (B, H, T, c)
    return self.output(y.transpose(-3, -2).contiguous().view(batch, length, width))


class _TheirBlock(torch.nn.Module):

  def __init__(self, embed_size, mlp_size, max_tokens, num_heads):
    super().__init__()
    self.attention = _TheirAttention(embed_size, max_tokens, num_heads)
    self.compute = torch.nn.Sequential(torch.nn.Linear(embed_size, mlp_size), torch.nn.ReLU(),
                                       torch.nn.Linear(mlp_size, embed_size))
    self.layer_norms = torch.nn.ModuleList([torch.nn.LayerNorm(embed_size) for _ in range(2)])

  def forward(self, x):
    x = x + self.attention(self.layer_norms[0](x))
    return x + self.compute(self.layer_norms[1](x))


class _TheirDTransformer(torch.nn.Module):

  def __init__(self, token_size, max_tokens, embed_size, mlp_size, num_heads, num_layers):
    super().__init__()
    self.token_embedding = torch.nn.Linear(token_size, embed_size, bias=False)
    self.postn_embedding = torch.nn.Linear(max_tokens, embed_size, bias=False)
    self.blocks = torch.nn.ModuleList([_TheirBlock(embed_size, mlp_size, max_tokens, num_heads)
                                       for _ in range(num_layers)])
    self.unembedding = torch.nn.Sequential(torch.nn.LayerNorm(embed_size),
                                           torch.nn.Linear(embed_size, token_size))

  def forward(self, toks):
    x = self.token_embedding(toks) + self.postn_embedding.weight.T[:toks.shape[1], :]
    for block in self.blocks:
      x = x + block(x)  # their DTransformer adds the block's output to its input once more
    return self.unembedding(x)


class _TheirRegressionModel(torch.nn.Module):
  """InContextRegressionTransformer: tokens [0, x] / [y, 0], read-out toks[:, 0::2, :1]."""

  def __init__(self, task_size=4, max_examples=8, embed_size=64, mlp_size=64, num_heads=4,
               num_layers=2):
    super().__init__()
    self.token_sequence_transformer = _TheirDTransformer(
        task_size + 1, 2 * max_examples, embed_size, mlp_size, num_heads, num_layers)

  def forward(self, xs, ys):
    batch, num_examples, dim = xs.shape
    toks = torch.cat([torch.zeros_like(ys), xs, ys, torch.zeros_like(xs)], dim=-1)
    toks = toks.reshape(batch, 2 * num_examples, dim + 1)
    return self.token_sequence_transformer(toks)[:, 0::2, :1]


def _their_model(seed=0, **sizes):
  torch.manual_seed(seed)
  model = _TheirRegressionModel(**sizes)
  _randomize(model, seed)
  return model.eval()


def _regression_config(state_dict, num_heads, num_examples, dim=4):
  config = regression_configs.get_config("tiny")
  config.data.dim, config.data.num_examples = dim, num_examples
  for key, value in convert_regression.model_section(state_dict, num_heads).items():
    config.model[key] = value
  return config


@pytest.mark.parametrize("sizes", [dict(), dict(num_layers=1, embed_dim=32, mlp_dim=48, num_heads=2)],
                         ids=["paper", "small"])
def test_authors_regression_model_outputs_and_loss_match(sizes):
  sizes = {"task_size": 4, "max_examples": 8, "embed_size": 64, "mlp_size": 64, "num_heads": 4,
           "num_layers": 2, **{{"embed_dim": "embed_size", "mlp_dim": "mlp_size"}.get(k, k): v
                               for k, v in sizes.items()}}
  model = _their_model(**sizes)
  state_dict = model.state_dict()
  assert "token_sequence_transformer.blocks.0.attention.attention.weight" in state_dict
  config = _regression_config(state_dict, sizes["num_heads"], sizes["max_examples"])
  params = convert_regression.from_token_sequence_transformer(state_dict, sizes["num_heads"])
  task = tasks.make_task(config)
  abstract = jax.eval_shape(task.init, jax.random.key(0))
  assert jax.tree.map(lambda x: x.shape, params) == jax.tree.map(
      lambda x: x.shape, abstract)
  if sizes["num_layers"] == 2 and sizes["embed_size"] == 64:
    assert sum(p.size for p in jax.tree.leaves(params)) == 51_717

  batch = regression_data.fixed_dataset(5, 64, dim=4, num_examples=8, noise_variance=0.125)
  xs, ys = np.asarray(batch.xs), np.asarray(batch.ys)  # (B, K, D), (B, K)
  with torch.no_grad():
    toks = torch.from_numpy(np.array(regression_data.tokenize(batch.xs, batch.ys)))
    reference_tokens = model.token_sequence_transformer(toks).numpy()  # (B, 2K, D+1)
    reference_pred = model(torch.from_numpy(xs), torch.from_numpy(ys[..., None]))[..., 0]
    reference_loss = float(torch.mean((reference_pred - torch.from_numpy(ys)) ** 2))
  jax_model = convert_regression_model(config)
  outputs = np.asarray(jax_model.apply({"params": params}, jnp.asarray(toks.numpy())))
  assert _max_relative(outputs, reference_tokens) < 1e-5
  loss = float(task.loss_fn(params, batch))
  assert abs(loss - reference_loss) <= 1e-6 * abs(reference_loss)
  # The double residual is part of their model: the standard residual computes something else.
  config.model.double_residual = False
  assert abs(float(tasks.make_task(config).loss_fn(params, batch)) - reference_loss) > 1e-3


def convert_regression_model(config):
  from jaxdev.models import regression as regression_model  # pylint: disable=import-outside-toplevel
  return regression_model.build_model(config.model, max_len=2 * config.data.num_examples,
                                      token_dim=config.data.dim + 1)


def test_fused_qkv_permutation_is_per_head():
  """Their fused output feature h·3c + s·c + i goes to jaxdev's s·C + h·c + i."""
  heads, head_dim = 3, 2
  width = heads * head_dim
  weight = np.arange(3 * width * width, dtype=np.float32).reshape(3 * width, width)
  kernel = convert_regression.fused_qkv_kernel(weight, heads)
  for h in range(heads):
    for s in range(3):
      for i in range(head_dim):
        np.testing.assert_array_equal(kernel[:, s * width + h * head_dim + i],
                                      weight[h * 3 * head_dim + s * head_dim + i])


def test_authors_regression_variants_jaxdev_lacks_are_refused():
  state_dict = dict(_their_model(num_layers=1, embed_size=16, mlp_size=16, num_heads=2).state_dict())
  with pytest.raises(ConversionError, match="does not divide"):
    convert_regression.from_token_sequence_transformer(state_dict, 3)
  without_output = {k: v for k, v in state_dict.items() if ".attention.output." not in k}
  with pytest.raises(ConversionError, match="include_output=False"):
    convert_regression.from_token_sequence_transformer(without_output, 2)
  shaped = dict(state_dict)
  shaped["token_sequence_transformer.blocks.0.compute.2.bias"] = torch.zeros(5)
  with pytest.raises(ConversionError, match="compute.2.bias"):
    convert_regression.from_token_sequence_transformer(shaped, 2)
