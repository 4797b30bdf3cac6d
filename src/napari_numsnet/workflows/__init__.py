"""Workflows: what the command line and the plugin run, built on the core packages."""
