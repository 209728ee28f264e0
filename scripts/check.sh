#!/usr/bin/env bash
# The checks that keep the design true, run by test.sh before pytest (any
# failure fails the run): ruff (lint), lint-imports (the import rules of
# docs/architecture.md, contracts in pyproject.toml) and mypy (types).
# Run alone: ./scripts/check.sh  (from any directory; uses .venv/ if present).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
bin="${GRIDPATROL_CHECK_BIN:-$here/.venv/bin}"
# lint-imports and mypy import our packages from this tree, not an installed copy.
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
"$bin/ruff" check --quiet .
"$bin/lint-imports" --no-cache >/dev/null || { "$bin/lint-imports" --no-cache; exit 1; }
"$bin/mypy"
