"""`rmswatch rules [--config FILE] [-o FILE] [--tests-output FILE]`: Prometheus rules + tests."""

from __future__ import annotations

import sys
from pathlib import Path

from rmswatch._validation import ConfigError
from rmswatch.config import load_config
from rmswatch.generators.rules import dump, promtool_tests_document, rules_document


def rules_command(
    config_path: str | None, output: str | None = None, tests_output: str | None = None
) -> int:
    """Write the rules (stdout when no `output`) and, if asked, a promtool test file.

    Without a config: the built-in SLOs and health rules (what dashboards/prometheus/ holds)."""
    config = load_config(config_path)
    try:
        text = dump(rules_document(config))
    except ValueError as exc:
        raise ConfigError(config_path or "(built-in defaults)", [str(exc)]) from exc
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    if tests_output:
        if output:
            rules_ref = Path(output).resolve()
            tests_dir = Path(tests_output).resolve().parent
            try:
                name = str(rules_ref.relative_to(tests_dir))
            except ValueError:
                name = str(rules_ref)
        else:
            name = "rules.yml"
        Path(tests_output).write_text(dump(promtool_tests_document(config, name)), encoding="utf-8")
    return 0
