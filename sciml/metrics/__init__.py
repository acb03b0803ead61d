"""Metrics: relative L2 error, Wasserstein and energy distances, sampling floors, CKA."""

from ._distributions import (
    energy_distance,
    relative_frobenius_error,
    sampling_floor,
    wasserstein2,
)
from ._fields import relative_l2_centered
from ._metrics import relative_l2, wasserstein
from ._representations import linear_cka
from ._symbolic import (
    EquationScores,
    continuation_rel_l2,
    decode_valid_equation,
    rhs_rel_l2,
    score_equations,
    solve_equation,
)
from ._timeseries import (
    MIN_SCORED_SEQUENCES,
    ScoreSummary,
    discriminative_score,
    embed_sequences,
    plot_embedding,
    predictive_score,
    tsne,
)

__all__ = [
    "MIN_SCORED_SEQUENCES",
    "EquationScores",
    "ScoreSummary",
    "continuation_rel_l2",
    "decode_valid_equation",
    "discriminative_score",
    "embed_sequences",
    "energy_distance",
    "linear_cka",
    "plot_embedding",
    "predictive_score",
    "relative_frobenius_error",
    "relative_l2",
    "relative_l2_centered",
    "rhs_rel_l2",
    "sampling_floor",
    "score_equations",
    "solve_equation",
    "tsne",
    "wasserstein",
    "wasserstein2",
]
