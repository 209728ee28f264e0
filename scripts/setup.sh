#!/usr/bin/env bash
# Idempotent set-up for a fresh machine: Mosquitto (from Debian) and a virtual
# environment with gridpatrol installed in editable mode. Sourced by demo.sh
# and test.sh; safe to run again.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"

apt_install() {
    # Runs apt-get only for what is missing; update once, quietly.
    if [ "$(id -u)" -eq 0 ]; then sudo_=""; else sudo_="sudo"; fi
    $sudo_ apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "$@" >/dev/null
}

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || need+=(mosquitto-clients)
if [ "${GRIDPATROL_BROWSER:-0}" = 1 ]; then
    # The dashboard tests drive Debian's Chromium; a CJK font renders zh-CN pages.
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    [ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
fi
if [ ${#need[@]} -gt 0 ]; then
    echo "setup: installing ${need[*]} from Debian" >&2
    apt_install "${need[@]}"
fi
# Debian puts mosquitto in /usr/sbin, which a non-login shell may not have.
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH="$PATH:/usr/sbin" ;; esac

py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$py" -m venv .venv
fi
stamp=.venv/.gridpatrol-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --upgrade pip >/dev/null
    .venv/bin/python -m pip install -q -e ".[agent,central,pki,test]"
    touch "$stamp"
fi
