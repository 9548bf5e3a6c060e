"""bng-suite's one door: `python run.py dataset=cifar10 model=resnet110 optim=sgdmng`.

Hydra composes configs/ (see configs/config.yaml); `-m` or an `experiment=` sweeps. Each run
writes results/runs/<dataset>/<model>/<optim>/<extra>/seed<k>/ and resumes when re-run. Exit
codes: 0 done, 1 a crash (a bug), 2 bad input or a failed environment (or a sweep with failed
cells), 3 another process is training the run, 130 Ctrl-C (README, "Exit codes").
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import experiments.config  # noqa: F401  (registers the resolvers the config uses)
from experiments.errors import EXIT_INTERRUPT
from experiments.sweep import run_cell


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> dict:
    from experiments.train import run

    return run_cell(run, cfg)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:          # Ctrl-C outside a run (while Hydra composes, say)
        sys.exit(EXIT_INTERRUPT)
