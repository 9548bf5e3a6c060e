"""Report builders for bng-suite: the paper's Tables 1-4 and Figures 1-3, from run outputs only.

They read `<results>/runs/<dataset>/<model>/<optim>/<extra>/seed<k>/` (metrics.jsonl,
summary.json, config.yaml; see docs/DESIGN.md "Run outputs") and never import training code.

- `runs`: tolerant readers and the run index.
- `grids`: which cells each artifact expects, and the command that produces a missing one.
- `aggregate`: the one seed-aggregation helper (mean, sample std, n) and its uses.
- `tables`, `figures`, `diagnostics`: the renderers. `cli`: `python scripts/report.py`.
"""
