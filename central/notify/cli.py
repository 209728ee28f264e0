"""``gridpatrol notify test --config C``: a test message to every ``[[notify]]`` target."""

from __future__ import annotations

import argparse
import sys

from central.config import ConfigError, load_config
from central.notify.notifier import send_check


def run_notify_test(args: argparse.Namespace) -> int:
    """One line per target, ``ok`` or ``FAILED`` with Apprise's reason; exit 1 if any failed."""
    config = load_config(args.config)
    if not config.notify:
        raise ConfigError(f"{args.config}: notify: no [[notify]] targets to test")
    failed = 0
    for target, result in send_check(config.notify):
        if result.ok:
            print(f"ok      {target.label}")
        else:
            failed += 1
            print(f"FAILED  {target.label}: {result.detail}")
    if failed:
        print(f"gridpatrol: {failed} of {len(config.notify)} notify targets failed", file=sys.stderr)
    return 1 if failed else 0
