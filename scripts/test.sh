#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the whole test suite. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GRIDPATROL_BROWSER=1
source "$here/scripts/setup.sh"
cd "$here"
exec .venv/bin/python -m pytest "$@"
