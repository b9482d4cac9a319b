"""Experiments built on the trainer and the data engine; see ``budget`` (the mask-budget study)."""

from ml.experiments.budget import (
    BUILTIN_SELECTORS,
    SelectionContext,
    Selector,
    budget_count,
    parse_budget,
    predictive_entropy,
    random_selector,
    run_budget_experiment,
    train_and_evaluate,
    uncertainty_selector,
)
from ml.experiments.report import plot_budget_curves, summarize

__all__ = [
    "BUILTIN_SELECTORS",
    "SelectionContext",
    "Selector",
    "budget_count",
    "parse_budget",
    "plot_budget_curves",
    "predictive_entropy",
    "random_selector",
    "run_budget_experiment",
    "summarize",
    "train_and_evaluate",
    "uncertainty_selector",
]
