"""Beam's `--setup_file ./setup.py` builds the workers' sdist with this; the package is described in
pyproject.toml."""

from setuptools import setup

setup()
