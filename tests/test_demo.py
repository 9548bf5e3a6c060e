"""`make demo` end to end, at a reduced size: the sweep trains, the report renders its files."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import REPO, cli_env


def test_make_demo_renders_figure_table_and_diagnostics(tmp_path: Path):
    out = tmp_path / "demo"
    proc = subprocess.run(
        ["make", "-s", "demo", f"DEMO_OUT={out}", "ARGS=epochs=2 dataset.limit=300"],
        cwd=REPO, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summaries = list(out.glob("runs/digits/mlp*/*/*/seed1/summary.json"))
    assert len(summaries) == 12                              # MLP-6/12/18 x 4 optimizers
    for name in ("figures/demo_figure1.png", "figures/demo_diagnostics.png",
                 "tables/demo_table.md", "tables/demo_table.csv"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "tables/demo_table.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ") and "Optimizer" not in line]
    assert len(rows) == 4
    assert all("—" not in row for row in rows), table        # every cell has a finished run
    assert "SGDMNG" in table and "AdamNG" in table
