"""bng-suite's one door: `python run.py dataset=cifar10 model=resnet110 optim=sgdmng`.

Hydra composes configs/ (see configs/config.yaml); `-m` or an `experiment=` sweeps. Each run
writes results/runs/<dataset>/<model>/<optim>/<extra>/seed<k>/ and resumes when re-run. Exit
codes: 0 done, 1 a crash (a bug), 2 bad input or a failed environment (or a sweep with failed
cells), 3 another process is training the run, 130 Ctrl-C (docs/DESIGN.md, "Signals, resume
and exit codes").
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

EXIT_INTERRUPT = 130   # experiments.errors' value; restated so Ctrl-C during imports has it

try:                   # Ctrl-C while torch and Hydra load (the first seconds) exits 130 quietly
    import hydra
    from omegaconf import DictConfig

    from experiments.config import check_overrides  # also registers the config's resolvers
    from experiments.errors import EXIT_USER, startup_error
    from experiments.sweep import run_cell
except KeyboardInterrupt:
    sys.exit(EXIT_INTERRUPT)

RAISED_BY_TASK = "_raised_by_task"   # marks an exception that escaped the run itself
# An absolute path: the same configs whether this file runs as a script or is imported (tests).
CONFIG_DIR = str(Path(__file__).resolve().parent / "configs")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig) -> dict:
    from experiments.stacked import run_group
    from experiments.train import run

    try:   # stack_seeds=K trains seeds seed..seed+K-1 together, each as its own run
        return run_cell(run_group if cfg.get("stack_seeds", 1) != 1 else run, cfg)
    except Exception as err:            # run_cell re-raises only bugs: keep their traceback
        setattr(err, RAISED_BY_TASK, True)
        raise


def main() -> None:
    """Hydra's main, with every error before the run starts as one line and exit code 2.

    The overrides are checked against the config first (experiments.config.check_overrides).

    Hydra parses the command line, composes the config and makes the run folder before our
    code runs, and would print its errors as several lines and exit 1. With HYDRA_FULL_ERROR
    set it re-raises them instead, here, where each becomes one line (an unknown choice keeps
    Hydra's list of the available ones). A user who sets HYDRA_FULL_ERROR=1 gets the traceback.
    """
    asked = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        sys.argv[1:] = check_overrides(sys.argv[1:])   # unknown keys; one spelling per value
        hydra_main()
    except KeyboardInterrupt:           # Ctrl-C outside a run (while Hydra composes, say)
        sys.exit(EXIT_INTERRUPT)
    except Exception as err:
        line = None if asked == "1" or getattr(err, RAISED_BY_TASK, False) else startup_error(err)
        if line is None:
            raise
        if os.environ.get("RANK", "0") == "0":          # under torchrun, one line, not one a rank
            print(f"error: {line}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER)
    finally:
        if asked is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = asked


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(EXIT_INTERRUPT)
