"""Gridpatrol: the command line, the simulated district and deployment tools."""

__version__ = "0.1.0"
