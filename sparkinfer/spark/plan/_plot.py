"""The plan's PNG: the token-length histogram, and the projected time against executors (matplotlib)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

from sparkinfer._optional import require

if TYPE_CHECKING:
    from sparkinfer.spark.plan import Plan


def save(plan: Plan, path: str) -> None:
    """Draw `plan` into a PNG at `path` (a local path; missing directories are created).

    matplotlib's object API (a `Figure` on an Agg canvas) draws without pyplot, so nothing global (the
    backend, open figures) changes in the caller's process.
    """
    require("matplotlib", extra="plot", purpose="Plan.save_plot")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.2), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    lengths_axes, time_axes = figure.subplots(1, 2)
    lengths = np.asarray(plan.lengths)
    lengths_axes.hist(lengths, bins=min(60, max(10, len(np.unique(lengths)))), color="#4878a8")
    lengths_axes.axvline(plan.max_length, color="#c03030", linestyle="--",
                         label=f"max_length {plan.max_length} ({plan.truncated_fraction:.1%} truncated)")
    lengths_axes.axvline(plan.tokens.p50, color="#303030", linestyle=":", label=f"median {plan.tokens.p50:g}")
    lengths_axes.set(title=f"Tokens per text ({len(lengths):,} sampled of {plan.texts:,})",
                     xlabel="tokens after truncation", ylabel="texts")
    lengths_axes.legend(loc="upper right")

    p, c = plan.projection, plan.cluster
    if p is None:
        time_axes.set_axis_off()
        time_axes.text(0.5, 0.5, "projected time: run with --calibrate N", ha="center", va="center", fontsize=12)
    else:
        executors = np.array([e for e, *_ in p.curve])
        top = max(point[3] for point in p.curve)
        unit, scale = ("seconds", 1.0) if top < 180 else ("minutes", 60.0) if top < 3 * 3600 else ("hours", 3600.0)
        mid, low, high = (np.array([point[i] for point in p.curve]) / scale for i in (1, 2, 3))
        time_axes.fill_between(executors, low, high, color="#4878a8", alpha=0.25, label="90% interval")
        time_axes.plot(executors, mid, marker="o", color="#4878a8", label="projected")
        time_axes.axvline(c.executors, color="#303030", linestyle=":",
                          label=f"{c.executors} x {c.slots_per_executor} slot(s): {p.seconds / scale:.3g} {unit}")
        time_axes.set(title=f"Projected time, {plan.rows:,} rows, batch_tokens {plan.batch_tokens}",
                      xlabel=f"executors ({c.slots_per_executor} task slot(s) each)", ylabel=unit, ylim=(0, None))
        time_axes.set_xticks(executors)
        time_axes.legend(loc="lower left")
    model = "/".join(plan.model.rstrip("/").split("/")[-2:])  # a bundled model's directory is named "model"
    figure.suptitle(f"sparkinfer plan: {plan.input} · {model} ({plan.task})")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    figure.savefig(path, format="png")
