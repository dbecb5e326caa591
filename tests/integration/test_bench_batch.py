"""The batch benchmark still runs end to end through a real sshd and writes its report (a small run; figures are
not judged here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import REPO
from support.services import POSTGRES_URL

pytestmark = [pytest.mark.bench]


@pytest.mark.slow
def test_batch_benchmark_runs_and_reports_rates_beside_the_baselines_and_the_store_floors(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\n<!-- pipeline results -->\nkept\n<!-- end pipeline results -->\n"
                      "<!-- batch results -->\nold figures\n<!-- end batch results -->\ntail\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "batch.py"), "--rows", "300", "--postgres-url", POSTGRES_URL,
         "--output", str(report)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = report.read_text()
    assert "old figures" not in text and "\nkept\n" in text and text.endswith("tail\n")
    rates = re.findall(r"\| ([\d,]+) \| [\d.]+ \| \d+ MB \|", text)
    assert len(rates) == 4 and all(int(rate.replace(",", "")) > 0 for rate in rates)
    assert re.search(r"Export / baseline: \*\*\d+\.\d%\*\*", text)
    assert re.search(r"Import / baseline: \*\*\d+\.\d%\*\*", text)
    floors = re.findall(r"\| store floor for the (export|import): .* \| ([\d,]+) \| [\d.]+ \| — \|", text)
    assert [kind for kind, _ in floors] == ["export", "import"] and all(int(rate.replace(",", "")) > 0
                                                                         for _, rate in floors)
    assert re.search(r"Store floor / baseline: export \*\*\d+\.\d%\*\* \(.+\); import \*\*\d+\.\d%\*\*", text)
    assert "300 rows" in text
