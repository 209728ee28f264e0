"""``python -m agent --config agent.toml``: the same as ``gridpatrol agent``."""

import sys

from gridpatrol.cli import main

if __name__ == "__main__":
    sys.exit(main(["agent", *sys.argv[1:]]))
