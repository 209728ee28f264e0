#!/usr/bin/env bash
# Sets up (see setup.sh), runs the checks (check.sh: ruff, import rules, mypy)
# and then the whole test suite. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GRIDPATROL_BROWSER=1
source "$here/scripts/setup.sh"
cd "$here"
./scripts/check.sh
exec .venv/bin/python -m pytest "$@"
