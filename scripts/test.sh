#!/usr/bin/env bash
# Sets up (see setup.sh), runs the checks (check.sh: ruff, import rules, mypy)
# and then the whole test suite. Extra arguments go to pytest.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export GRIDPATROL_BROWSER=1
# The store's tests also run on PostgreSQL (127.0.0.1:5432, user postgres, trust; GRIDPATROL_TEST_PG
# names another). Without one they skip and say why; in CI (CI=true) a missing PostgreSQL fails them.
if [ -n "${CI:-}" ]; then export GRIDPATROL_REQUIRE_PG="${GRIDPATROL_REQUIRE_PG:-1}"; fi
source "$here/scripts/setup.sh"
cd "$here"
./scripts/check.sh
exec .venv/bin/python -m pytest "$@"
