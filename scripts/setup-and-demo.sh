#!/usr/bin/env bash
# First command of README.md: install everything, build the guest image, run a container.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
set +e
pykata run -- sh -c 'echo hello from $(uname -r); exit 3'
echo "container exited with $?"
