"""The console's routes (core/operator/console/__init__.py): each reads or acts through the
operations the CLI uses (core/operations/), never by SQL of its own but the dead letters'
listing; an action first checks that the engine database takes writes (writes.py)."""

from __future__ import annotations

import click
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import func, select

from s360bridge.core.cli.operating import Since, utc
from s360bridge.core.errors import S360BridgeError
from s360bridge.core.operations import admin, audit, erasure, pause, reconcile_runs, search
from s360bridge.core.operations.audit import Actor
from s360bridge.core.redact import redact
from s360bridge.core.storage.tables import INBOX

from . import figures, problems
from .writes import check_writable, register_handlers


def actor() -> Actor:
    """The operator acting: the listener's basic-auth user name (an API key has none)."""
    auth = request.authorization
    return Actor(auth.username if auth and auth.username else "api-key", via="console")


def _since(text: str | None) -> float | None:
    """As the CLI reads --since: 30m, 12h, 7d ago, or an ISO 8601 date (UTC unless it says)."""
    if not text:
        return None
    try:
        return Since().convert(text, None, None)
    except click.BadParameter as exc:
        abort(400, f"since: {exc.message}")


QUARANTINE_SHOWN = 200


def _newest(bridge) -> int:
    """The newest record's id: a replay confirmed replays what its dry run counted, not what
    died since."""
    with bridge.engine.connect() as conn:
        return conn.execute(select(func.max(INBOX.c.id))).scalar() or 0


def register_views(bp: Blueprint, bridge) -> None:
    from s360bridge.core.operator.metrics import registry_for

    registry = registry_for(bridge)
    institutions = sorted(bridge.settings.institutions)
    pages = []  # the plugins' pages, nested in the console: (endpoint, title)
    for page, title, endpoint in bridge.hooks.operator_pages(bridge):
        bp.register_blueprint(page)
        pages.append((f"console.{page.name}.{endpoint}", title))
    register_handlers(bp)

    @bp.app_template_global()
    def console_nav():
        return [("console.overview", "Overview"), ("console.search_page", "Search"),
                ("console.problems", "Dead letters & quarantine"),
                ("console.runs", "Reconcile"), ("console.forget_page", "Forget a contact"),
                ("console.trail", "Audit trail"), *pages]

    bp.add_app_template_filter(utc, "when")  # as the CLI prints a time

    @bp.get("/")
    def overview():
        paused = {(p["institution"], p["target"]): p for p in pause.paused(bridge)}
        return render_template("console/overview.html", figures=figures.figures(bridge, registry),
                               paused=paused)

    @bp.post("/targets/<code>/<target>/<action>")
    def target_action(code: str, target: str, action: str):
        check_writable(bridge)
        try:
            if action == "pause":
                done = pause.pause(bridge, code, target, actor=actor())
                flash(f"{code}/{target} paused" if done else f"{code}/{target} was paused")
            elif action == "resume":
                queued = pause.resume(bridge, code, target, actor=actor())
                flash(f"{code}/{target} resumed: {queued} record(s) queued again"
                      if queued is not None else f"{code}/{target} was not paused")
            else:
                abort(404)
        except S360BridgeError as exc:
            flash(str(exc), "error")
        return redirect(url_for("console.overview"))

    @bp.get("/search")
    def search_page():
        code, key = request.args.get("institution"), (request.args.get("key") or "").strip()
        found = error = None
        if code and key:
            try:
                found = search.search(bridge, code, key)
            except S360BridgeError as exc:
                error = str(exc)
        return render_template("console/search.html", institutions=institutions, code=code,
                               key=key, found=found, error=error)

    @bp.get("/problems", endpoint="problems")
    def problems_page():
        f = {k: request.args.get(k) or None for k in ("institution", "stream", "target", "key")}
        return render_template(
            "console/problems.html", institutions=institutions, filters=f,
            dead=problems.dead_letters(bridge, **f), shown=problems.LIMIT,
            held=[dict(q, reason=redact(q["reason"])) for q in admin.quarantined(
                bridge, f["institution"], f["stream"], QUARANTINE_SHOWN)],
            held_shown=QUARANTINE_SHOWN)

    @bp.post("/replay")
    def replay():
        f = {k: request.form.get(k) or None for k in ("institution", "stream", "target", "key")}
        since = _since(request.form.get("since"))
        if request.form.get("confirm") != "yes":  # a dry run first: how many
            n = admin.replay(bridge, f["institution"], f["stream"], f["key"], actor=actor(),
                             target=f["target"], since=since, dry_run=True)
            return render_template("console/confirm.html", what="dead letter(s)", count=n,
                                   action=url_for("console.replay"),
                                   fields={**f, "since": request.form.get("since") or "",
                                           "through": _newest(bridge)})
        through = request.form.get("through", "")
        if not through.isdigit():
            abort(400, "a replay is confirmed from its dry run (through: the newest record "
                       "it counted)")
        check_writable(bridge)
        n = admin.replay(bridge, f["institution"], f["stream"], f["key"], actor=actor(),
                         target=f["target"], since=since, through=int(through))
        flash(f"{n} dead letter(s) queued again for delivery")
        return redirect(url_for("console.problems", **{k: v for k, v in f.items() if v}))

    @bp.post("/reprocess")
    def reprocess():
        ids = [int(i) for i in request.form.getlist("entry") if i.isdigit()]
        entries = [e for e in map(lambda i: admin.quarantine_entry(bridge, i), ids)
                   if e is not None and e["state"] == "held"]
        if request.form.get("confirm") != "yes":
            totals = admin.reprocess(bridge, entries, actor=actor(), dry_run=True)
            return render_template("console/confirm.html", what="quarantined record(s)",
                                   count=len(entries), totals=totals,
                                   action=url_for("console.reprocess"), entries=ids)
        check_writable(bridge)
        totals = admin.reprocess(bridge, entries, actor=actor())
        flash(f"{len(entries)} quarantined record(s) reprocessed: {totals['accepted']} "
              f"accepted, {totals['duplicates']} already there, {totals['still_invalid']} "
              "still invalid")
        return redirect(url_for("console.problems"))

    @bp.route("/forget", methods=["GET", "POST"])
    def forget_page():
        """A contact erased from every local store (a GDPR request), after a confirmation."""
        code = request.values.get("institution")
        number = (request.values.get("contact") or "").strip()
        if request.method == "GET" or not (code and number):
            return render_template("console/forget.html", institutions=institutions,
                                   code=code, number=number, asked=request.method == "POST")
        if request.form.get("confirm") != "yes":
            return render_template("console/forget.html", institutions=institutions,
                                   code=code, number=number, confirming=True)
        check_writable(bridge)
        try:
            removed = erasure.forget_contact(bridge, code, number, actor=actor())
        except S360BridgeError as exc:
            flash(str(exc), "error")
            return redirect(url_for("console.forget_page"))
        flash(f"contact {number} of {code} forgotten: {'; '.join(removed)}")
        return redirect(url_for("console.trail"))

    @bp.get("/reconcile")
    def runs():
        return render_template("console/reconcile.html", runs=reconcile_runs.runs(bridge))

    @bp.get("/reconcile/<int:run_id>")
    def run_page(run_id: int):
        run = reconcile_runs.run(bridge, run_id)
        if run is None:
            abort(404)
        return render_template("console/reconcile_run.html", run=run)

    @bp.get("/audit")
    def trail():
        f = {k: request.args.get(k) or None for k in ("institution", "action")}
        return render_template("console/audit.html", institutions=institutions,
                               actions=audit.ACTIONS, filters=f, entries=audit.entries(
                                   bridge, f["institution"], f["action"],
                                   _since(request.args.get("since")), limit=200))
