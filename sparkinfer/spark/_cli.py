"""The job's command line: options derived from `Job` and `ModelSpec`, ``--config job.yaml``, one-line errors.

Every ModelSpec field becomes an option (``batch_tokens`` → ``--batch-tokens``) typed from its annotation and
documented from the class docstring, so a field added to the spec reaches the command line with its help.
A config file (YAML, or JSON, which is YAML) holds the same options by name; the command line overrides it.

A user error is one line on stderr (``--verbose`` adds the traceback), and a local session this process
starts keeps Spark's start-up output off the terminal (`quiet_local_session`).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import os
import re
import sys
import threading
import traceback
import types
import uuid
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
                      "predicting (default: chosen from the rows and the cluster's task slots: a task per slot at "
                      "least, up to 3 waves, full --buffer-rows; the run report records the choice)"}),
    ("--progress-interval", {"type": float, "metavar": "SECONDS", "help": "seconds between progress lines on "
                             "stderr while predicting: rows done and to do, rows/s, tokens/s, ETA; 0 for none "
                             "(default: 30)"}),
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
Exit status: 0 done, 1 the run failed, 2 a bad option or value, or a problem found before any Spark job started
(input, columns, output, model, packages), 3 --validate failed (nothing published). --verbose shows tracebacks
and Spark's own start-up output."""


class Parser(argparse.ArgumentParser):
    """argparse with the one-line errors a scheduler's log wants: ``prog: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser(
    prog: str,
    choices: dict[str, tuple[str, ...]],
    description: str,
    *,
    extra: Sequence[tuple[str, dict[str, Any]]] = (),
    epilog: str | None = None,
) -> Parser:
    """The job's parser; every default is suppressed so that only given options reach the namespace.

    `extra` holds a command's own options (``sparkinfer plan``'s), ``(flag, argparse keywords)``, shown
    first; `epilog` replaces the job's examples.
    """
    parser = Parser(prog=prog, description=description, epilog=_EPILOG if epilog is None else epilog,
                    argument_default=argparse.SUPPRESS, formatter_class=argparse.RawDescriptionHelpFormatter)
    if extra:
        own = parser.add_argument_group(f"{prog} options")
        for flag, keywords in extra:
            own.add_argument(flag, **keywords)
    parser.add_argument("--config", metavar="JOB.yaml", help="YAML (or JSON) file holding any of these options "
                        "by name (input, input_col, batch_tokens, ...); the command line overrides it")
    job = parser.add_argument_group("job")
    for flag, keywords in _JOB_OPTIONS:
        dest = flag[2:].replace("-", "_")
        choice: dict[str, Any] = {"choices": choices[dest]} if dest in choices else {}
        job.add_argument(flag, **keywords, **choice)
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


# A command's --verbose, as a `build_parser` extra: tracebacks with the one-line errors, and Spark's start-up output.
VERBOSE: tuple[str, dict[str, Any]] = ("--verbose", {"action": "store_true", "help": "show the traceback of an "
                                       "error, and Spark's own start-up output and warnings"})


def report_error(prog: str, exc: BaseException, code: int, *, verbose: bool) -> int:
    """`fail` with ``Type: message`` for `exc`, after its traceback when `verbose`."""
    if verbose:
        traceback.print_exception(exc)
    return fail(prog, f"{type(exc).__name__}: {exc}", code)


def jvm_started() -> bool:
    """Whether this process has started (or was started with) a Spark JVM already."""
    from pyspark import SparkContext

    return SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ


def quiet_local_session(settings: dict[str, str]) -> Any:
    """A SparkSession on a JVM started here, whose start-up output stays off the terminal.

    Starting a JVM prints a dozen lines before the session exists (the JVM's own "Using incubator
    modules", log4j's default profile, "Setting default log level", NativeCodeLoader and loopback-address
    warnings). The JVM's stderr goes through a pipe: what it writes until the session is up, with its log
    level at ERROR, is held back and dropped, and everything after passes through unchanged (the progress
    bar, errors, Python workers' output). When the start fails, what was held back is printed, so the
    cause shows.

    Args:
        settings: Spark configuration for the new session (``spark.master``, ``spark.app.name``, ...).

    Returns:
        The session (``pyspark.sql.SparkSession``).
    """
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway
    from pyspark.sql import SparkSession

    marker = f"sparkinfer: Spark is up {uuid.uuid4().hex}".encode()
    read, write = os.pipe()
    relay = _StartupRelay(read, marker)
    relay.start()
    try:
        conf = SparkConf(loadDefaults=False).setAll(list(settings.items()))
        try:
            gateway = launch_gateway(conf, popen_kwargs={"stderr": write})
        finally:
            os.close(write)  # the JVM holds its own copy: the relay ends when the JVM does
        SparkContext(conf=conf, gateway=gateway)
        session = SparkSession.builder.getOrCreate()
        session.sparkContext.setLogLevel("ERROR")
        err = gateway.jvm.java.lang.System.err
        err.println(marker.decode())
        err.flush()
    except BaseException:
        relay.release()
        relay.join(timeout=2)  # a JVM that died has closed the pipe: let its last words through
        raise
    return session


class _StartupRelay(threading.Thread):
    """Copies the JVM's stderr (a pipe) to ours, dropping everything before `marker`."""

    def __init__(self, fd: int, marker: bytes) -> None:
        super().__init__(name="sparkinfer-jvm-stderr", daemon=True)
        self._fd, self._marker = fd, marker
        self._lock = threading.Lock()
        self._held = bytearray()
        self._passing = False

    def run(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                if self._passing:
                    _write_stderr(chunk)
                    continue
                self._held += chunk
                at = self._held.find(self._marker)
                if at >= 0:
                    rest = bytes(self._held[at + len(self._marker):])
                    self._held.clear()
                    self._passing = True
                    _write_stderr(rest[1:] if rest.startswith(b"\n") else rest)
        os.close(self._fd)

    def release(self) -> None:
        """Print what was held back and pass everything through from now on."""
        with self._lock:
            if not self._passing:
                self._passing = True
                _write_stderr(bytes(self._held))
                self._held.clear()


def _write_stderr(data: bytes) -> None:
    """Write to file descriptor 2, where the JVM would have written itself."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(2, view)
        except OSError:  # stderr closed: nothing to tell
            return
        view = view[written:]
