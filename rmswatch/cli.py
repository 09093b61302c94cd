"""`rmswatch` command line: serve | demo | rules | report | silence | evaluate | migrate.

Arguments are parsed here; each command's work lives in its own module (`rmswatch.commands.*`, or
the server, demo and report) and is imported only when that command runs, so `rmswatch rules`
never pays for importing pandas, SQLAlchemy or Dash. Any `RmswatchError` (a bad config, a store
URL that can't be opened, a bad argument) is printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Any

from rmswatch._ports import port_number
from rmswatch._validation import RmswatchError

DEFAULT_DB = "sqlite:///rmswatch.db"

# command -> (module, function); the function takes the parsed arguments as keywords
_TARGETS: dict[str, tuple[str, str]] = {
    "serve": ("rmswatch.server", "serve"),
    "demo": ("rmswatch.demo", "run_demo"),
    "rules": ("rmswatch.commands.rules", "rules_command"),
    "report": ("rmswatch.app.report", "report_command"),
    "silence": ("rmswatch.commands.silence", "silence_command"),
    "evaluate": ("rmswatch.commands.evaluate", "evaluate_command"),
    "migrate": ("rmswatch.commands.migrate", "migrate_command"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmswatch", description="Observe and operate PyTorch training jobs."
    )
    parser.add_argument("--version", action="version", version=f"rmswatch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="dashboard + ingest API + alert scheduler")
    serve.add_argument(
        "--db", dest="db_url", default=None, help="store URL (default sqlite:///rmswatch.db)"
    )
    serve.add_argument("--config", dest="config_path", default=None, help="YAML config file")
    serve.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=port_number, default=None, help="port (default 8050)")
    serve.add_argument(
        "--no-scheduler",
        dest="scheduler",
        action="store_false",
        help="no alert evaluation",
    )
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="allow a non-loopback --host without server.auth (prints a warning)",
    )

    demo = sub.add_parser("demo", help="real trainings + server + alerts on one laptop")
    demo.add_argument("--quick", action="store_true", help="short scenarios; exit when done")
    demo.add_argument("--port", type=port_number, default=8050, help="dashboard port")
    demo.add_argument("--dir", dest="workdir", default="rmswatch-demo", help="demo files go here")

    rules = sub.add_parser("rules", help="write Prometheus recording and alerting rules")
    rules.add_argument(
        "--config", dest="config_path", default=None,
        help="YAML config (default: the built-in SLOs and health rules)",
    )  # fmt: skip
    rules.add_argument("-o", "--output", default=None, help="rules file (default stdout)")
    rules.add_argument(
        "--tests-output", default=None, help="also write a `promtool test rules` file here"
    )

    report = sub.add_parser("report", help="self-contained HTML postmortem report of a run")
    report.add_argument("--db", dest="db_url", default=DEFAULT_DB)
    report.add_argument("--run", dest="run_id", required=True)
    report.add_argument("-o", "--output", default=None, help="HTML file (default <run>.html)")

    silence = sub.add_parser("silence", help="create, list or expire alert silences")
    silence.add_argument("--db", dest="db_url", default=DEFAULT_DB)
    silence_sub = silence.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = silence_sub.add_parser("add", help="silence alerts matching label matchers")
    add.add_argument("matchers", nargs="+", help="label=value, label!=value, label=~regex")
    add.add_argument("--duration", default="1h", help="e.g. 30m, 4h, 2d")
    add.add_argument("--author", required=True)
    add.add_argument("--comment", required=True)
    silence_sub.add_parser("list", help="active and pending silences")
    expire = silence_sub.add_parser("expire", help="end a silence now")
    expire.add_argument("silence_id", type=int)

    evaluate = sub.add_parser("evaluate", help="run one alert evaluation tick and exit")
    evaluate.add_argument("--db", dest="db_url", default=DEFAULT_DB)
    evaluate.add_argument("--config", dest="config_path", default=None)

    migrate = sub.add_parser("migrate", help="create or upgrade the store schema")
    migrate.add_argument("--db", dest="db_url", default=DEFAULT_DB)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    module_name, function_name = _TARGETS[command]
    try:
        target: Any = getattr(importlib.import_module(module_name), function_name)
        return int(target(**args) or 0)
    except KeyboardInterrupt:
        return 130
    except RmswatchError as exc:
        print(f"rmswatch {command}: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(error: BaseException) -> str:
    """The error's message on one line (YAML and driver messages can span several)."""
    return " ".join(str(error).split()) or type(error).__name__


def _version() -> str:
    from rmswatch import __version__

    return __version__


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
