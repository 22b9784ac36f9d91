"""``sparkinfer plan``: the job's options plus the plan's own, the table or one JSON object, the plot."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from sparkinfer.errors import MissingDependencyError, SparkInferError, SpecError
from sparkinfer.spark.plan._gather import check_options

_PLAN_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--sample", {"type": int, "metavar": "N", "help": "texts to sample and tokenize on the driver with the "
                  "model's tokenizer, no GPU needed (default: 2000)"}),
    ("--calibrate", {"type": int, "metavar": "N", "help": "run the model on N sampled texts in one Spark task "
                     "and project the job's time"}),
    ("--executors", {"type": int, "metavar": "E", "help": "project for E executors (with --slots-per-executor "
                     "or --gpus-per-executor; default: the session's task slots)"}),
    ("--slots-per-executor", {"type": int, "metavar": "N", "help": "task slots per executor (cores over "
                              "spark.task.cpus)"}),
    ("--gpus-per-executor", {"type": int, "metavar": "N", "help": "GPUs per executor, one task each"}),
    ("--plot", {"metavar": "PATH.png", "help": "where to write the plot: token-length histogram, projected time "
                "against executors (default: sparkinfer-plan.png; '' for none)"}),
    ("--json", {"action": "store_true", "help": "print one JSON object instead of the table"}),
]
_PLAN_EPILOG = """\
Takes the input, model and task options of `sparkinfer run` (--output is not needed).

examples:
  sparkinfer plan --input /data/docs --model /models/minilm --task embedding
  sparkinfer plan --config job.yaml --calibrate 500 --executors 8 --gpus-per-executor 1 --json

The JSON object holds rows, sampled_rows, tokens (p50, p90, p99, max, mean; after truncation),
truncated_fraction, padding (per candidate batch_tokens), recommended (batch_tokens, partitions, chunk_rows)
and, with --calibrate, projected_seconds and projection (low, high, the curve against executors)."""
_DESCRIPTION = ("Plan a run before paying for it: token lengths and truncation, padding per batch_tokens, "
                "suggested batch_tokens, partitions and chunk_rows, and with --calibrate the job's projected time.")
_NO_OUTPUT = "-"  # plan reads and writes no output; Job wants a path


def plan_main(argv: Sequence[str]) -> int:
    """``sparkinfer plan [options]``: print the plan (``--json``: one JSON object) and write its plot.

    Returns:
        0 on success, 2 for a bad option or value (one line on stderr), 1 when planning fails.
    """
    from sparkinfer.spark import _cli
    from sparkinfer.spark.job import _progress_log, _session, parse_command
    from sparkinfer.spark.plan import plan

    prog = "sparkinfer plan"
    try:
        job, master, options = parse_command(argv, prog, extra=_PLAN_OPTIONS, defaults={"output": _NO_OUTPUT},
                                             description=_DESCRIPTION, epilog=_PLAN_EPILOG)
        check_options(options.get("sample", 2000), options.get("calibrate"), options.get("executors"),
                      options.get("slots_per_executor"), options.get("gpus_per_executor"))
    except SpecError as exc:
        return _cli.fail(prog, str(exc))
    try:
        with _progress_log():
            result = plan(_session(master), job, sample=options.get("sample", 2000),
                          calibrate=options.get("calibrate"), executors=options.get("executors"),
                          slots_per_executor=options.get("slots_per_executor"),
                          gpus_per_executor=options.get("gpus_per_executor"))
    except SpecError as exc:
        return _cli.fail(prog, str(exc))
    except SparkInferError as exc:
        return _cli.fail(prog, f"{type(exc).__name__}: {exc}", 1)
    print(json.dumps(result.to_dict(), indent=2) if options.get("json") else result.summary())
    path = options.get("plot", "sparkinfer-plan.png")
    if path:
        try:
            result.save_plot(path)
            print(f"plot written to {path}", file=sys.stderr)
        except MissingDependencyError as exc:
            print(f"{prog}: no plot: {exc}", file=sys.stderr)
        except OSError as exc:
            return _cli.fail(prog, f"the plan is done but its plot could not be written to {path}: {exc}", 1)
    return 0
