"""Render the paper's tables and figures from run outputs (no training).

    python scripts/report.py                          # everything present under results/
    python scripts/report.py table1 --results results # one artifact
    python scripts/report.py --scale quick            # results/quick, labelled QUICK SCALE
    python scripts/report.py demo                     # results/demo (what `make demo` renders)

See scripts/reports/ and `python scripts/report.py --help`."""

import sys

from reports.cli import main  # scripts/reports/, beside this script

if __name__ == "__main__":
    sys.exit(main())
