"""The job's command line: options derived from `Job` and `ModelSpec`, ``--config job.yaml``, one-line errors.

Every ModelSpec field becomes an option (``batch_tokens`` → ``--batch-tokens``) typed from its annotation and
documented from the class docstring, so a field added to the spec reaches the command line with its help.
A config file (YAML, or JSON, which is YAML) holds the same options by name; the command line overrides it.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, Literal, NoReturn, Union, get_args, get_origin, get_type_hints

from sparkinfer.errors import SpecError
from sparkinfer.spec import ModelSpec

# Job options: (flags, argparse keywords). Their dests are also the config file's keys.
_JOB_OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("--input", {"metavar": "PATH_OR_TABLE", "help": "input table: a Delta or Parquet directory/URI, or a "
                 "catalog table name (required)"}),
    ("--output", {"metavar": "PATH", "help": "output table directory or URI (required)"}),
    ("--model", {"metavar": "PATH_OR_ID", "help": "model directory (local, /dbfs/..., or the name given to "
                 "spark-submit --archives model.tar.gz#NAME) or a hub id in the local Hugging Face cache (required)"}),
    ("--task", {"help": "what to predict (required)"}),
    ("--format", {"help": "output format (default: delta)"}),
    ("--input-format", {"help": "input format; auto reads a catalog name as a table, a directory with "
                        "_delta_log as Delta, anything else as Parquet (default: auto)"}),
    ("--input-col", {"nargs": "+", "metavar": "COL", "help": "text column(s) to predict; each gets its own "
                     "output column (default: text)"}),
    ("--prompt-template", {"metavar": "TEMPLATE", "help": "build the one input from several "
                           "columns, e.g. 'Summarize {title}: {body}' ({{ and }} for literal braces; a null column "
                           "gives a null output); replaces --input-col"}),
    ("--output-col", {"nargs": "+", "metavar": "COL", "help": "output column(s), one per input column "
                      "(default: embedding or prediction; INPUT_embedding ... with several inputs)"}),
    ("--mode", {"help": "what to do when the output exists: error, append or overwrite (default: error; "
                "with --key only append, the default, is allowed)"}),
    ("--key", {"metavar": "COL", "help": "unique row key: rows whose key the output already holds from the same "
               "model fingerprint are skipped, so an interrupted or repeated run finishes every key once"}),
    ("--partition-by", {"nargs": "+", "metavar": "COL", "help": "partition the output by these columns"}),
    ("--chunk-rows", {"type": int, "metavar": "N", "help": "with --key: rows predicted and committed together; "
                      "a crash loses at most one chunk (default: 100000)"}),
    ("--partitions", {"type": int, "metavar": "N", "help": "repartition each chunk into N tasks before "
                      "predicting (default: keep the input's partitioning)"}),
    ("--on-model-change", {"help": "with --key, when the output holds rows from another model fingerprint: "
                           "refuse (exit with an error), or repredict every input row and replace the output "
                           "(default: refuse)"}),
    ("--report", {"metavar": "PATH", "help": "where to write the run report JSON "
                  "(default: OUTPUT.report.json, next to the output)"}),
    ("--delta-engine", {"help": "Delta through Spark's Delta source or delta-rs; auto uses Spark's when the "
                        "session has it (default: auto)"}),
    ("--validate", {"nargs": "?", "const": "", "metavar": "CHECKS.yaml", "help": "write-audit-publish: stage "
                    "the predictions in OUTPUT.staged, validate them against the published OUTPUT (drift, errors, "
                    "truncation; default checks, or those of CHECKS.yaml), and publish them in one Delta commit "
                    "only if no error-level check fails; else exit with status 3, keeping them staged (publish "
                    "them after review with: sparkinfer publish OUTPUT). Writes OUTPUT.validation.html/.json and "
                    "a review sample OUTPUT.review next to the run report"}),
    ("--master", {"metavar": "URL", "help": "Spark master when not started by spark-submit (default: local[*])"}),
    ("--remote", {"metavar": "URL", "help": "run on a Spark Connect server instead, e.g. sc://host:15002 "
                  "(default: the SPARK_REMOTE environment variable, when set)"}),
]
_SPEC_SKIPPED = {"model", "task"}
# Tuple fields taken one value per flag (``--stop '###' --stop $'\n\n'``): a stop string may hold a comma.
_REPEATED = {"stop", "choices"}
_EPILOG = """\
examples:
  spark-submit scripts/predict_table.py --input /data/docs --output /data/docs_emb \\
      --model /dbfs/models/all-MiniLM-L6-v2 --task embedding --input-col title body --key id
  sparkinfer run --config job.yaml --batch-tokens 8192     # options from job.yaml, one overridden
  sparkinfer run --config job.yaml --remote sc://connect-host:15002   # on a Spark Connect server

The report (rows, tokens, padding efficiency, throughput, fingerprint) is printed and written as JSON.
Exit status: 0 done, 1 the run failed, 2 a bad option or value, 3 --validate failed (nothing published)."""


class Parser(argparse.ArgumentParser):
    """argparse with the one-line errors a scheduler's log wants: ``prog: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(prog: str, choices: dict[str, tuple[str, ...]], description: str) -> Parser:
    """The job's parser; every default is suppressed so that only given options reach the namespace."""
    parser = Parser(prog=prog, description=description, epilog=_EPILOG, argument_default=argparse.SUPPRESS,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="JOB.yaml", help="YAML (or JSON) file holding any of these options "
                        "by name (input, input_col, batch_tokens, ...); the command line overrides it")
    job = parser.add_argument_group("job")
    for flag, keywords in _JOB_OPTIONS:
        dest = flag[2:].replace("-", "_")
        extra: dict[str, Any] = {"choices": choices[dest]} if dest in choices else {}
        job.add_argument(flag, **keywords, **extra)
    model = parser.add_argument_group("model options (ModelSpec fields)")
    docs = _arg_docs(ModelSpec)
    hints = get_type_hints(ModelSpec)
    for field in dataclasses.fields(ModelSpec):
        if field.name in _SPEC_SKIPPED:
            continue
        hint = hints[field.name]
        flag = "--" + field.name.replace("_", "-")
        default = "" if field.default is dataclasses.MISSING else f" (default: {field.default})"
        text = (docs.get(field.name, "") + default).replace("%", "%%")
        if _members(hint) == [bool]:
            model.add_argument(flag, action=argparse.BooleanOptionalAction, help=text)
        elif field.name == "schema":
            model.add_argument(flag, type=_schema_text, metavar="DDL_OR_JSON", help=text + "; a DDL string, JSON "
                               "Schema text, or the path of a .json file holding a JSON Schema")
        elif field.name in _REPEATED:
            model.add_argument(flag, action="append", metavar="TEXT", help=text + " (repeat the flag for several)")
        else:
            model.add_argument(flag, type=_cli_type(hint), metavar=_metavar(hint), help=text)
    return parser


def option_names() -> set[str]:
    """Every option's dest: the keys a config file may use."""
    return {flag[2:].replace("-", "_") for flag, _ in _JOB_OPTIONS} | spec_field_names()


def spec_field_names() -> set[str]:
    """The ModelSpec fields the command line and config files accept."""
    return {f.name for f in dataclasses.fields(ModelSpec)} - _SPEC_SKIPPED


def load_config(path: str, known: set[str]) -> dict[str, Any]:
    """A config file's options, keys normalized to dests (``input-col`` → ``input_col``).

    Raises:
        SpecError: When the file cannot be read or parsed, or names an unknown option.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise SpecError(f"--config {path}: cannot read it ({type(exc).__name__}: {exc})".replace("\n", " ")) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(f"--config {path} must hold a mapping of option names to values (got {type(data).__name__})")
    options = {str(k).replace("-", "_"): v for k, v in data.items()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise SpecError(f"--config {path} has unknown option(s) {unknown}; expected some of {sorted(known)}")
    return options


def coerce_spec_option(name: str, value: Any) -> Any:
    """A config file's value for ModelSpec field `name`, converted as the command line would convert it."""
    return _coerce(get_type_hints(ModelSpec)[name], value)


def _members(hint: Any) -> list[Any]:
    if get_origin(hint) in (Union, types.UnionType):
        return [m for m in get_args(hint) if m is not type(None)]
    return [hint]


def _optional(hint: Any) -> bool:
    return get_origin(hint) in (Union, types.UnionType) and type(None) in get_args(hint)


def _schema_text(value: str) -> str:
    """``--schema``: a DDL or JSON Schema string as given, or the text of the .json file it names."""
    if not value.lower().endswith(".json"):
        return value
    try:
        with open(value, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read the schema file {value!r}: {exc.strerror}") from exc


def _cli_type(hint: Any) -> Callable[[str], Any]:
    def convert(raw: str) -> Any:
        try:
            return _coerce(hint, raw)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    convert.__name__ = _metavar(hint)  # argparse names the type in its "invalid ... value" message
    return convert


def _coerce(hint: Any, value: Any) -> Any:
    """Convert a command-line string (or a config value) to a value of `hint`; ModelSpec validates it."""
    if not isinstance(value, str):
        for member in _members(hint):
            if isinstance(value, dict) and dataclasses.is_dataclass(member):
                return _build_dataclass(member, value)
            if isinstance(value, list) and get_origin(member) is tuple:
                return tuple(value)
        return value
    if value.lower() in ("none", "null") and _optional(hint):
        return None
    for member in _members(hint):
        if get_origin(member) is Literal:
            for choice in get_args(member):
                if value == str(choice):
                    return choice
        elif member is bool:
            if value.lower() in ("true", "false"):
                return value.lower() == "true"
        elif member in (int, float):
            try:
                return member(value)
            except ValueError:
                continue
        elif dataclasses.is_dataclass(member) and value.lstrip().startswith("{"):
            return _build_dataclass(member, json.loads(value))
        elif get_origin(member) is tuple:
            return tuple(v.strip() for v in value.split(",") if v.strip())
        elif member is str:
            return value
    raise ValueError(f"expected {_metavar(hint)} (got {value!r})")


def _build_dataclass(cls: Any, values: dict[str, Any]) -> Any:
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}; expected some of {sorted(names)}")
    return cls(**{k: _coerce(hints[k], v) for k, v in values.items()})


def _metavar(hint: Any) -> str:
    parts: list[str] = []
    for member in _members(hint):
        if get_origin(member) is Literal:
            parts.extend(str(c) for c in get_args(member))
        elif dataclasses.is_dataclass(member):
            parts.append(f"JSON {getattr(member, '__name__', 'object')}")
        elif get_origin(member) is tuple:
            parts.append("A,B,...")
        else:
            parts.append({int: "N", float: "X", str: "TEXT", bool: "true|false"}.get(member, str(member)))
    if _optional(hint):
        parts.append("none")
    return "{" + ",".join(parts) + "}" if len(parts) > 1 else parts[0]


def _arg_docs(cls: type) -> dict[str, str]:
    """``name: text`` entries of a Google-style ``Args:`` section, continuation lines joined."""
    docs: dict[str, str] = {}
    current = None
    in_args = False
    for line in (inspect.getdoc(cls) or "").splitlines():
        if line.strip() == "Args:":
            in_args = True
            continue
        if not in_args:
            continue
        if line and not line.startswith(" "):
            break
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry:
            current = entry.group(1)
            docs[current] = entry.group(2).strip()
        elif current and line.startswith("        "):
            docs[current] += " " + line.strip()
    return docs


def fail(prog: str, message: str, code: int = 2) -> int:
    """Print the one-line error and return the exit code."""
    print(f"{prog}: error: {' '.join(message.split())}", file=sys.stderr)
    return code


def split_subcommand(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """``sparkinfer run --input ...`` → ("run", ["--input", ...])."""
    if not argv or argv[0].startswith("-"):
        return None, list(argv)
    return argv[0], list(argv[1:])
