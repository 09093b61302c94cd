"""docs/metrics.md is generated from the catalogue, and `--check` catches a stale page."""

from __future__ import annotations

import subprocess
import sys

from rmswatch.generators import metrics_docs
from tests.helpers import REPO_ROOT, subprocess_env


def test_docs_metrics_md_matches_the_catalogue() -> None:
    page = (REPO_ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    assert page == metrics_docs.render_markdown(), "docs/metrics.md is stale: run `make docs`"


def test_check_mode_fails_for_a_stale_page(tmp_path: object) -> None:
    stale = tmp_path / "metrics.md"  # type: ignore[operator]
    stale.write_text("# old\n")
    command = [sys.executable, "-m", "rmswatch.generators.metrics_docs", "--check", str(stale)]
    failed = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True)
    assert failed.returncode == 1 and "make docs" in failed.stderr
    write = [sys.executable, "-m", "rmswatch.generators.metrics_docs", "--write", str(stale)]
    subprocess.run(write, env=subprocess_env(), check=True)
    assert subprocess.run(command, env=subprocess_env()).returncode == 0
