#!/usr/bin/env bash
# Sets up (see setup.sh) and runs the simulated district. Extra arguments go to
# `gridpatrol demo` (for example --agents 12 --minutes 3).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$here/scripts/setup.sh"
cd "$here"
exec .venv/bin/gridpatrol demo "$@"
