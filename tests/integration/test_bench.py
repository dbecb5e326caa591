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


@pytest.mark.slow
def test_http_intake_benchmark_runs_each_kind_of_set_up_and_reports_latencies(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    report.write_text("# Benchmarks\n\n<!-- http intake results -->\nold\n<!-- end http intake results -->\ntail\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "http_intake.py"), "--setups", "floor,embedded,api-2",
         "--rates", "20", "--seconds", "1", "--amqp-url", AMQP_URL, "--postgres-url", POSTGRES_URL,
         "--output", str(report)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = report.read_text()
    assert "old" not in text.split("<!-- http intake results -->")[1] and text.endswith("tail\n")
    rows = re.findall(r"^\| (floor|embedded|api-2) \| 20/s \| (\d+)/s \| ([\d.]+) ms \|", text, re.MULTILINE)
    assert [row[0] for row in rows] == ["floor", "embedded", "api-2"]
    assert all(int(row[1]) > 0 and float(row[2]) > 0 for row in rows)
    assert "not arrived" not in text  # every case accepted reached the stand-in target
    assert re.search(r"embedded: API memory \d+ MB before the load, \d+ MB after its last step", text)
