"""WSGI entry point for running the receiver under another server, e.g. gunicorn:

    S360BRIDGE_CONFIG=config/ gunicorn -w 4 -b 127.0.0.1:8360 's360bridge.core.wsgi:app_from_env()'

Only the receiver runs there; start ``s360bridge worker`` beside it for delivery and jobs. A
configuration or a database that stops it from starting is one line on gunicorn's standard error
(then gunicorn stops: "App failed to load"), not a traceback.
"""

from __future__ import annotations

import os
import sys

from flask import Flask
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from s360bridge.core.bridge import Bridge
from s360bridge.core.config import load_settings
from s360bridge.core.errors import ConfigError, S360BridgeError
from s360bridge.core.garbage import freeze_startup
from s360bridge.core.pipeline.receiver import create_app
from s360bridge.core.storage.db import user_error

CONFIG_ENV = "S360BRIDGE_CONFIG"


def app_from_env() -> Flask:
    """The receiver for the files or folders listed in S360BRIDGE_CONFIG (os.pathsep between);
    what it built is left out of the garbage collector's walks (core/garbage.py). gunicorn
    calls this in each of its worker processes, or once before it forks them (``--preload``):
    either way, before any request."""
    paths = [p for p in os.environ.get(CONFIG_ENV, "").split(os.pathsep) if p]
    try:
        if not paths:
            raise ConfigError(f"set {CONFIG_ENV} to the configuration file or folder to serve")
        app = create_app(Bridge(load_settings(paths)))
    except (S360BridgeError, DBAPIError, PoolTimeout) as exc:
        raise _load_error(user_error(exc)) from None
    freeze_startup()
    return app


def _load_error(exc: S360BridgeError) -> Exception:
    """gunicorn prints an AppImportError as its message alone and stops; another server (or a
    caller of this function) gets the error as it is."""
    if "gunicorn.arbiter" not in sys.modules:
        return exc
    from gunicorn.errors import AppImportError

    return AppImportError(f"error: {exc}")
