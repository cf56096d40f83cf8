"""WSGI entry point for running the receiver under another server, e.g. gunicorn:

    S360BRIDGE_CONFIG=config/ gunicorn -w 4 -b 127.0.0.1:8360 's360bridge.core.wsgi:app_from_env()'

Only the receiver runs there; start ``s360bridge worker`` beside it for delivery and jobs.
"""

from __future__ import annotations

import os

from flask import Flask

from s360bridge.core.bridge import Bridge
from s360bridge.core.config import load_settings
from s360bridge.core.errors import ConfigError
from s360bridge.core.pipeline.receiver import create_app

CONFIG_ENV = "S360BRIDGE_CONFIG"


def app_from_env() -> Flask:
    """The receiver for the files or folders listed in S360BRIDGE_CONFIG (os.pathsep between)."""
    paths = [p for p in os.environ.get(CONFIG_ENV, "").split(os.pathsep) if p]
    if not paths:
        raise ConfigError(f"set {CONFIG_ENV} to the configuration file or folder to serve")
    return create_app(Bridge(load_settings(paths)))
