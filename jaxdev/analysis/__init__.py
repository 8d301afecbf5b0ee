"""CPU-side analysis of a run's files (numpy, scipy, scikit-learn, matplotlib; no JAX)."""
