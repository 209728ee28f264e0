"""The bottom layer: small modules agent, central and the command line share.

Agent and central never import each other, yet both read TOML the same way,
tune their MQTT sockets the same way and talk to systemd the same way; those
pieces live here. This package imports nothing of ours (an import-linter
contract in pyproject.toml keeps it so), so any package may use it.
"""
