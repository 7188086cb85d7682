"""Deps agent: answers with the dependency its requirements.txt names, as
imported from the agent's own environment."""

import importlib.metadata
import sys

import iniconfig


def handler(context):
    return {
        "dependency": "iniconfig",
        "version": importlib.metadata.version("iniconfig"),
        "module": iniconfig.__file__,
        "prefix": sys.prefix,
    }
