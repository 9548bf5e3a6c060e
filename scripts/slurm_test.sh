#!/usr/bin/env bash
# The real-Slurm tests: install Debian's slurm-wlm and munge when missing (apt, needs root),
# then run tests/test_slurm.py, which starts its own single-node cluster in a temporary folder.
# Usage: scripts/slurm_test.sh [pytest args]      (make slurm-test)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "slurm-wlm and munge are missing; run as root or: sudo apt-get install slurm-wlm munge" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"
exec "$PYTHON" -m pytest -q -m slurm tests/test_slurm.py "$@"
