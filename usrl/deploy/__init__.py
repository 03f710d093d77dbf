"""Choosing a width at runtime: latency profiles measured on the device, the Pareto widths, and a
width controller that keeps calls within a latency budget (depends on torch only)."""

from usrl.deploy.controller import BudgetedAgent, BudgetedModule, WidthController
from usrl.deploy.latency import (
    LatencyProfile,
    LatencyRow,
    device_info,
    measure_latency,
    model_fingerprint,
    pareto_widths,
    plot_profile,
)

__all__ = [
    "BudgetedAgent",
    "BudgetedModule",
    "LatencyProfile",
    "LatencyRow",
    "WidthController",
    "device_info",
    "measure_latency",
    "model_fingerprint",
    "pareto_widths",
    "plot_profile",
]
