#!/usr/bin/env bash
# The test command: make sure everything is installed and the guest image is built, then run
# the whole suite (unit tests and end-to-end tests that boot real VMs).
# Extra arguments go to pytest, e.g. `scripts/test.sh -m 'not e2e'` for the quick unit run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
lint-imports --no-cache >/dev/null || lint-imports --no-cache  # the layers (DESIGN.md)
exec python3 -m pytest "$@"
