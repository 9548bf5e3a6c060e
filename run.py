"""bng-suite's one door: `python run.py dataset=cifar10 model=resnet110 optim=sgdmng`.

Hydra composes configs/ (see configs/config.yaml); `-m` or an `experiment=` sweeps. Each run
writes results/runs/<dataset>/<model>/<optim>/<extra>/seed<k>/ and resumes when re-run.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

import experiments.config  # noqa: F401  (registers the resolvers the config uses)
from experiments.errors import clean_exit


@hydra.main(version_base="1.3", config_path="configs", config_name="config")
def main(cfg: DictConfig) -> None:
    from experiments.train import run

    with clean_exit():
        run(cfg)


if __name__ == "__main__":
    sys.exit(main())
