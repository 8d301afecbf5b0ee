"""Converters from PyTorch checkpoints to jaxdev parameters (and back, where it is asked for).

- :mod:`jaxdev.convert.transformer_lens`: TransformerLens ``HookedTransformer`` state dicts of
  the attention-only architecture (LayerNorm, shortformer positions) <-> ``AttnOnlyTransformer``
  params (:mod:`jaxdev.models.attention`), both directions, bitwise.
- :mod:`jaxdev.convert.regression`: the in-context regression transformer of Hoogland et al.
  (their ``token_sequence_transformer``, fused qkv laid out per head) -> ``RegressionTransformer``
  params (:mod:`jaxdev.models.regression`).
- :mod:`jaxdev.convert.run`: a directory of per-step PyTorch checkpoint files -> a jaxdev run
  directory that the LLC sweep, the indicators and the analysis read unchanged.

Converters take any mapping of names to tensors (``torch.Tensor`` or numpy arrays) and return
float32 numpy pytrees; PyTorch itself is imported only to read files and to build tensors when
converting back (``pip install 'jaxdev[torch]'``).
"""

from jaxdev.convert.common import ConversionError  # noqa: F401  (no torch import)
