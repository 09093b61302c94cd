"""The documentation's examples are real: the example config loads, the README's links resolve."""

from __future__ import annotations

import re

from rmswatch.config import load_config
from tests.helpers import REPO_ROOT


def test_the_documented_example_config_loads_with_every_section_set() -> None:
    config = load_config(REPO_ROOT / "docs" / "examples" / "rmswatch.yaml")
    assert config.server.auth.basic is not None
    assert [r.name for r in config.receivers] == ["oncall-pd", "ml-slack", "audit"]
    assert any(slo.name == "ranker-nan-free" for slo in config.slos)
    assert config.health.stalled.after == 15 * 60


def test_every_relative_link_in_the_readme_and_docs_points_at_a_file() -> None:
    pages = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").rglob("*.md"))]
    missing = []
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                missing.append(f"{page.relative_to(REPO_ROOT)} -> {target}")
    assert not missing, "broken links:\n" + "\n".join(missing)


def test_benchmarks_md_is_assembled_from_the_current_results() -> None:
    import subprocess
    import sys

    check = [sys.executable, str(REPO_ROOT / "benchmarks" / "assemble.py"), "--check"]
    assert subprocess.run(check, capture_output=True).returncode == 0
