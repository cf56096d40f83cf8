"""The operator listener: a Flask application of its own, off by default (core/operator/app.py)."""
