"""The paper's published numbers (Hoogland et al. 2024, "The Developmental Landscape of
In-Context Learning"), as the report tables set them beside a run's.

Steps are training steps. The in-context linear regression (LR) numbers are the paper's; the
authors' own seed-0 files (``tests/data/authors-lr-seed0``) are a separate reference, read by
:mod:`jaxdev.report.compare`.
"""

# The steps at which the LLC table reads every curve.
LLC_STEPS = (0, 1_000, 2_500, 5_000, 10_000, 20_000, 40_000, 80_000, 126_000, 167_000, 318_000,
             500_000)
# The paper's LR LLC (mean of seeds 0-4, its settings) at LLC_STEPS; 40k stands for its 35-40k peak.
PAPER_LLC = {0: 4, 1_000: 19, 2_500: 44, 5_000: 119, 10_000: 156, 20_000: 168, 40_000: 170,
             80_000: 166, 126_000: 157, 167_000: 153, 318_000: 123, 500_000: 128}
PAPER_BOUNDARIES = (1_000, 40_000, 126_000, 320_000)  # the boundaries of its stages LR1 … LR5
PAPER_FORMS = (2_500, 34_500, 106_100, 168_900)  # its ED forms (its LR seed 1, Appendix D)
PAPER_LM_BOUNDARIES = (900, 6_500, 8_500, 17_000)  # its language stages LM1 … LM5

REFERENCE_CHAINS = 10  # chains behind the authors' llc_chain_std (their seed-0 files)
