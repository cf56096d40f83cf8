"""The ceiling of the stack: a bare Flask endpoint that parses the JSON body and inserts raw rows
with the stdlib sqlite3 module, on the same server and SQLite durability as the receiver."""

import os
import sqlite3
import threading

import orjson
from flask import Flask, request

DB = os.environ.get("BARE_DB", "var/bare.db")
SYNCHRONOUS = os.environ.get("BARE_SYNCHRONOUS", "FULL")
app = Flask(__name__)
_local = threading.local()


def connection() -> sqlite3.Connection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(DB, timeout=10, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
        conn.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, body TEXT)")
        _local.conn = conn
    return conn


@app.post("/s360/<stream>/<institution>")
def receive(stream, institution):
    records = orjson.loads(request.get_data())
    conn = connection()
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany("INSERT INTO raw (body) VALUES (?)",
                     [(orjson.dumps(r).decode(),) for r in records])
    conn.execute("COMMIT")
    return {"accepted": len(records)}
