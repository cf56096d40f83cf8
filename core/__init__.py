"""s360bridge core: the engine that receives S-360 data, keeps it safe and delivers it."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("s360bridge")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"
