"""The pipeline benchmark still runs end to end and writes its report (a small run; figures are not judged here)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from support.harness import REPO
from support.services import AMQP_URL, POSTGRES_URL

pytestmark = [pytest.mark.bench]


@pytest.mark.slow
def test_pipeline_benchmark_runs_and_reports_both_rates(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\n<!-- pipeline results -->\nold figures\n<!-- end pipeline results -->\ntail\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "pipeline.py"), "--cases", "60", "--workers", "1",
         "--amqp-url", AMQP_URL, "--postgres-url", POSTGRES_URL, "--output", str(report)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = report.read_text()
    assert "old figures" not in text and text.endswith("tail\n")
    rates = re.findall(r"\| ([\d,]+) \|", text)
    assert len(rates) == 2 and all(int(rate.replace(",", "")) > 0 for rate in rates)
    assert re.search(r"Pipeline / raw hop: \*\*\d+%\*\*", text)
    assert re.search(r"Peak resident memory of a worker process: \*\*\d+ MB\*\*", text)
    assert re.search(r"Worker CPU time per case \(all threads of all workers\): \*\*\d+\.\d\d ms\*\*", text)
