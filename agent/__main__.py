"""``python -m agent --config agent.toml``: the same as ``gridpatrol agent``.

Only the agent and the bottom layer are loaded: not the whole command line.
"""

import sys

from gridpatrol.base.command import UsageParser, add_log_level, run_command, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = UsageParser(prog="python -m agent", description="run one edge agent")
    add_log_level(parser)
    parser.add_argument("--config", required=True, metavar="FILE", help="the agent's TOML configuration file")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    from agent.cli import run_agent  # after the arguments: --help needs no GPIO library

    return run_command(run_agent, args)


if __name__ == "__main__":
    sys.exit(main())
