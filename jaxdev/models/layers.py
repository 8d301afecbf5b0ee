"""Pieces shared by the models."""

from __future__ import annotations


def dense(x, w):
  """``x [..., n] @ w [n, m]`` as one rank-2 matmul, reshaped back to ``[..., m]``.

  The same product as ``x @ w``, written so that its weight gradient is one plain
  ``[n, rows] @ [rows, m]`` matmul: for a rank-3 ``x @ w`` XLA's CPU backend makes a three-axis
  transpose and runs that gradient several times slower.
  """
  return (x.reshape(-1, x.shape[-1]) @ w).reshape(*x.shape[:-1], w.shape[-1])
