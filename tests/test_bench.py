"""`make bench` cannot rot: each scenario runs once, at a tiny size, as `make test` runs it.
(Benchmarks are not tests: no figure is asserted here, only that every one is produced.)"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.proc import Finished, clean_env

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(300)
async def test_every_bench_scenario_runs_at_a_tiny_size(tmp_path: Path) -> None:
    out = tmp_path / "latest.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench",
        "--tiny",
        "--out",
        str(out),
        cwd=ROOT,
        env=clean_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 280)
    done = Finished(proc.returncode or 0, stdout.decode(), stderr.decode())
    assert done.code == 0, done.stderr[-3000:]
    figures = [row["figure"] for row in json.loads(out.read_text())["rows"]]
    for expected in (
        "cycle ÷ floor",
        "naive per-job GET/SET",
        "Redis round trips per cycle",
        "Redis bytes per tracked job",
        "peak RSS growth",
        "/jobs ack p99",
        "/jobs reply p99,",
        "/jobs reply p99 after",
        "/jobs upstream calls",
        "alert latency p99",
        "takeover after SIGKILL",
    ):
        assert any(f.startswith(expected) for f in figures), (expected, figures)
    assert "figure" in done.stdout.splitlines()[3]  # one table, printed
