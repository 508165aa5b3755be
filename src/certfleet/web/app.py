"""The Starlette application of ``certfleet serve``: pages, the JSON API, actions.

Every page and API needs a login: a page without one redirects to
``/login``; an API call without one is 401. API calls may instead carry
``Authorization: Bearer TOKEN`` (``certfleet serve token NAME``; read-only).
Every form carries the session's CSRF token and is refused (403) without
it; only operators may start an action (403 for a viewer), and never with
``--read-only``. Pages are Jinja2 templates with autoescaping: device text
and certificate fields are data, shown as text. No script is sent (the
Content-Security-Policy forbids any).
"""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from ..errors import CertfleetError
from .auth import LOGIN_COOKIE, SESSION_COOKIE, Sessions, Throttle, same_token
from .jobs import ACTIONS, Busy, Jobs
from .users import Account, Users
from .view import EstateView, common_name

if TYPE_CHECKING:
    from ..estate.store import ReadOnlyStore, Store

__all__ = ["WebConfig", "create_app"]

#: Rows of the estate table per page (the soonest to expire first).
PAGE_ROWS = 200

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass
class WebConfig:
    """What the application serves from, and how."""

    inventory: Path
    state_dir: Path
    users: Path
    read_only: bool = False
    https: bool = False
    refresh_minutes: float = 5.0
    metrics: bool = False
    # The shared (PostgreSQL) store, when the inventory's [state] url or --state-url names
    # one; its password and store key never appear in a page or a log.
    state_url: str | None = None
    state_password: str | None = field(default=None, repr=False)
    state_key: str | None = field(default=None, repr=False)

    def open_reader(self) -> ReadOnlyStore:
        """The store, opened to read only (the pages and the background scan)."""
        from ..estate.store import Store

        return Store.open_readonly(self.state_dir, url=self.state_url,
                                   password=self.state_password, key=self.state_key)

    def open_writer(self) -> Store:
        """The store, opened to write (an action), as the CLI opens it."""
        from ..estate.store import Store

        return Store.open(self.state_dir, url=self.state_url, password=self.state_password,
                          key=self.state_key)


def _clock(value: Any) -> str:
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError):
        return str(value)


def _environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True, trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["clock"] = _clock
    env.filters["cn"] = common_name
    return env


def timeline_svg(data: dict[str, Any]) -> Markup:
    """The timeline as an SVG drawn here (every text escaped)."""
    bars: list[dict[str, Any]] = data["bars"]
    now: dt.datetime = data["now"]
    end: dt.datetime = data["end"]
    span = (end - now).total_seconds() or 1.0
    left, width, row_h = 220, 760, 22
    height = 40 + row_h * max(1, len(bars))

    def x(moment: dt.datetime) -> float:
        return left + width * max(0.0, min(1.0, (moment - now).total_seconds() / span))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 20}" '
        f'height="{height}" role="img" aria-label="certificate timeline">',
        '<defs><pattern id="due" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="3" height="6" fill="#d62828"/></pattern>'
        '<pattern id="ari" width="6" height="6" patternUnits="userSpaceOnUse">'
        '<circle cx="3" cy="3" r="1.6" fill="#1d3557"/></pattern>'
        "</defs>",
    ]
    for month in range(0, data["days"] + 1, 30):
        at = x(now + dt.timedelta(days=month))
        parts.append(f'<line x1="{at:.1f}" y1="20" x2="{at:.1f}" y2="{height}" stroke="#eee"/>'
                     f'<text x="{at:.1f}" y="14" font-size="10" fill="#666">+{month}d</text>')
    for index, bar in enumerate(bars):
        y = 24 + index * row_h
        label = html.escape(bar["row"])
        expires = bar["expires"].strftime("%Y-%m-%d")
        colour = "#457b9d" if bar["kind"] == "version" else "#8ab17d"
        start, stop = x(bar["start"]), x(bar["end"])
        parts.append(f'<a href="{html.escape(quote(bar["href"]))}"><text x="4" y="{y + 14}" '
                     f'font-size="12">{label}</text></a>')
        parts.append(f'<rect x="{start:.1f}" y="{y + 3}" width="{max(1.0, stop - start):.1f}" '
                     f'height="{row_h - 6}" fill="{colour}"><title>{label}: expires '
                     f'{expires}</title></rect>')
        if bar["window"] is not None:
            begin = x(bar["window"])
            parts.append(f'<rect x="{begin:.1f}" y="{y + 3}" '
                         f'width="{max(1.0, stop - begin):.1f}" height="{row_h - 6}" '
                         f'fill="url(#{"ari" if bar["source"] == "ari" else "due"})" '
                         f'data-window="{html.escape(bar["source"])}"><title>'
                         f'{"ARI window" if bar["source"] == "ari" else "renewal window"}: '
                         f'{html.escape(bar["rule"])}</title></rect>')
        parts.append(f'<text x="{min(stop + 4, left + width - 70):.1f}" y="{y + 14}" '
                     f'font-size="10">{expires}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


class Dashboard:
    """The state of one server: config, users, sessions, the shared view, the jobs."""

    def __init__(self, config: WebConfig, view: EstateView) -> None:
        self.config = config
        self.view = view
        self.users = Users(config.users)
        self.sessions = Sessions()
        self.throttle = Throttle()
        self.jobs = Jobs(config.inventory, config.state_dir, view.store, view.rescan,
                         open_store=config.open_writer)
        self.env = _environment()

    # ---- who is asking ---------------------------------------------------------------

    def account(self, request: Request, *, api: bool = False) -> tuple[Account | None, str]:
        """The caller's account and CSRF token ("" for a token, or when not logged in)."""
        session = self.sessions.get(request.cookies.get(SESSION_COOKIE))
        if session is not None:
            return session.account, session.csrf
        header = request.headers.get("authorization", "")
        if api and header.lower().startswith("bearer "):
            return self.users.bearer(header[7:].strip()), ""
        return None, ""

    def page(self, request: Request, template: str, status: int = 200,
             **context: Any) -> Response:
        account, csrf = self.account(request)
        body = self.env.get_template(template).render(
            account=account, csrf=csrf,
            operator=bool(account and account.operator and not self.config.read_only),
            refresh=context.pop("refresh", None), **context)
        return self.secure(Response(body, status, media_type="text/html"))

    @staticmethod
    def secure(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict",
                            secure=self.config.https, path="/")


def create_app(config: WebConfig, view: EstateView | None = None,
               metrics: Any = None) -> Starlette:
    """The application; ``view`` (the shared scan) is made read-only from ``config`` if None.

    ``metrics`` (a prometheus_client registry, ``serve --metrics``) is served at
    ``/metrics`` to a logged-in user or a bearer token, as ``certfleet exporter`` does.
    """
    if view is None:
        view = EstateView(config.inventory, config.open_reader(),
                          refresh=config.refresh_minutes * 60)
    board = Dashboard(config, view)

    def need_login(request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    def json_api(request: Request) -> Account | Response:
        account, _ = board.account(request, api=True)
        if account is None:
            return board.secure(JSONResponse(
                {"error": "not logged in", "hint": "log in, or send Authorization: Bearer "
                 "TOKEN (certfleet serve token NAME)"}, 401))
        return account

    def viewer(request: Request) -> Account | Response:
        account, _ = board.account(request)
        return account if account is not None else need_login(request)

    def not_found(request: Request, what: str) -> Response:
        return board.page(request, "error.html", 404, title="Not found", message=what)

    # ---- login -------------------------------------------------------------------------

    async def login_form(request: Request, error: str | None = None,
                         status: int = 200) -> Response:
        import secrets

        token = secrets.token_urlsafe(32)
        nxt = request.query_params.get("next", "/")
        response = board.page(request, "login.html", status, title="Log in", error=error,
                              login_csrf=token, next=nxt if nxt.startswith("/") else "/")
        board.cookie(response, LOGIN_COOKIE, token, 600)
        return response

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return await login_form(request)
        form = await request.form()
        if not same_token(str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")):
            return await login_form(request, "the form expired or lacks its CSRF token: "
                                    "log in again", 403)
        name = str(form.get("username", ""))
        client = request.client.host if request.client else "?"
        keys = (f"user:{name}", f"client:{client}")
        wait = board.throttle.wait(*keys)
        if wait > 0:
            return await login_form(request, f"too many failed logins: try again in "
                                    f"{int(wait) + 1} s", 429)
        try:
            account = board.users.login(name, str(form.get("password", "")))
        except CertfleetError as exc:
            return await login_form(request, exc.message, 500)
        if account is None:
            board.throttle.failed(*keys)
            return await login_form(request, "wrong user name or password", 401)
        board.throttle.succeeded(*keys)
        sid, _ = board.sessions.new(account)
        nxt = str(form.get("next") or "/")
        response = RedirectResponse(nxt if nxt.startswith("/") and not nxt.startswith("//")
                                    else "/", status_code=303)
        board.cookie(response, SESSION_COOKIE, sid, None)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return board.secure(response)

    async def logout(request: Request) -> Response:
        account, csrf = board.account(request)
        form = await request.form()
        if account is not None and not same_token(str(form.get("csrf", "")), csrf):
            return board.page(request, "error.html", 403, title="Refused",
                              message="the form lacks its CSRF token: reload the page")
        board.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return board.secure(response)

    # ---- pages ---------------------------------------------------------------------------

    def estate_context(request: Request) -> dict[str, Any]:
        tag = request.query_params.get("tag") or None
        kind = request.query_params.get("kind") or None
        tags, kinds = view.filters()
        snapshot = view.snapshot
        inventory = snapshot.inventory
        rows = view.estate_rows(tag, kind)
        page_text = request.query_params.get("page", "1")
        page = max(1, int(page_text)) if page_text.isdigit() else 1
        pages = max(1, -(-len(rows) // PAGE_ROWS))
        page = min(page, pages)
        shown = rows[(page - 1) * PAGE_ROWS:page * PAGE_ROWS]
        query = "&".join(f"{k}={quote(v)}" for k, v in (("tag", tag), ("kind", kind)) if v)
        return {
            "rows": shown, "total": len(rows), "page": page, "pages": pages,
            "first": (page - 1) * PAGE_ROWS + 1 if shown else 0,
            "last": (page - 1) * PAGE_ROWS + len(shown), "query": query,
            "tag": tag, "kind": kind, "tags": tags,
            "kinds": kinds,
            "scanned_at": snapshot.at.isoformat(timespec="seconds") if snapshot.at else None,
            "scan_error": snapshot.error, "refresh_minutes": f"{config.refresh_minutes:g}",
            "certificates": sorted(inventory.certificates) if inventory else [],
        }

    async def estate(request: Request) -> Response:
        who = viewer(request)
        if isinstance(who, Response):
            return who
        return board.page(request, "estate.html", title="Estate",
                          message=request.query_params.get("message"), **estate_context(request))

    async def timeline(request: Request) -> Response:
        who = viewer(request)
        if isinstance(who, Response):
            return who
        data = view.timeline()
        return board.page(request, "timeline.html", title="Timeline", days=data["days"],
                          svg=timeline_svg(data))

    def device_data(name: str) -> dict[str, Any] | None:
        inventory = view.snapshot.inventory
        device = inventory.devices.get(name) if inventory else None
        history = view.store.history(device=name, limit=100)
        if device is None and not history:
            return None
        return {
            "name": name,
            "device": {"kind": device.kind, "certificate": device.certificate,
                       "tags": list(device.tags)} if device else None,
            "rows": [r for r in view.estate_rows() if r["device"] == name],
            "history": history,
            "backups": [{"id": b.id, "created": b.created, "served_sha256": b.served_sha256,
                         "has_private_key": b.has_private_key, "encrypted": b.encrypted}
                        for b in view.store.backups(name)],
        }

    async def device_page(request: Request) -> Response:
        who = viewer(request)
        if isinstance(who, Response):
            return who
        data = device_data(request.path_params["name"])
        if data is None:
            return not_found(request, "no device of that name in the inventory or the history")
        return board.page(request, "device.html", title=f"Device {data['name']}",
                          message=request.query_params.get("message"), **data)

    def certificate_data(name: str) -> dict[str, Any] | None:
        inventory = view.snapshot.inventory
        spec = inventory.certificates.get(name) if inventory else None
        versions = view.store.versions(name)
        if spec is None and not versions:
            return None
        current = view.store.current_version(name)
        served: dict[str, list[dict[str, str]]] = {}
        for row in view.estate_rows():
            if row["sha256"]:
                served.setdefault(row["sha256"], []).append(
                    {"device": row["device"], "label": row["label"],
                     "listener": row["listener"]})
        return {
            "name": name,
            "spec": {"names": list(spec.names)} if spec else None,
            "versions": [{**v.to_dict(), "current": current is not None and v.id == current.id,
                          "served_on": served.get(v.leaf_sha256, [])} for v in versions],
            "plans": view.plans.get(name, []),
            "plan_error": view.plan_error,
            "findings": view.findings.get(name, []),
        }

    async def certificate_page(request: Request) -> Response:
        who = viewer(request)
        if isinstance(who, Response):
            return who
        data = certificate_data(request.path_params["name"])
        if data is None:
            return not_found(request, "no certificate of that name in the inventory or store")
        return board.page(request, "certificate.html", title=f"Certificate {data['name']}",
                          **data)

    async def runs_page(request: Request) -> Response:
        who = viewer(request)
        if isinstance(who, Response):
            return who
        return board.page(request, "runs.html", title="Runs", runs=view.runs(),
                          jobs=board.jobs.all())

    async def job_page(request: Request) -> Response:
        who = viewer(request)
        if isinstance(who, Response):
            return who
        job = board.jobs.get(int(request.path_params["id"]))
        if job is None:
            return not_found(request, "no such action on this server")
        return board.page(request, "job.html", title=job.title, job=job,
                          refresh=1 if job.running else None)

    # ---- actions -------------------------------------------------------------------------

    async def act(request: Request) -> Response:
        account, csrf = board.account(request)
        if account is None:
            return need_login(request)
        form = await request.form()
        if not same_token(str(form.get("csrf", "")), csrf):
            return board.page(request, "error.html", 403, title="Refused",
                              message="the form lacks its CSRF token: reload the page and "
                              "try again")
        if config.read_only:
            return board.page(request, "error.html", 403, title="Refused",
                              message="this dashboard is read-only (certfleet serve "
                              "--read-only)")
        if not account.operator:
            return board.page(request, "error.html", 403, title="Refused",
                              message=f"{account.name} is a viewer: only an operator may "
                              "start an action")
        action = request.path_params["action"]
        if action not in ACTIONS:
            return not_found(request, "no such action")
        target = str(form.get("target") or "") or None
        try:
            job = board.jobs.start(action, account, target)
        except Busy as busy:
            return board.page(request, "error.html", 409, title="Refused",
                              message=f"refused: another deploy holds the lock: {busy.holder}")
        except CertfleetError as exc:
            return board.page(request, "error.html", 400, title="Refused",
                              message=exc.message)
        return board.secure(RedirectResponse(f"/jobs/{job.id}", status_code=303))

    # ---- the JSON API ---------------------------------------------------------------------

    async def api_estate(request: Request) -> Response:
        who = json_api(request)
        if isinstance(who, Response):
            return who
        return board.secure(JSONResponse(view.snapshot.to_dict()))

    async def api_device(request: Request) -> Response:
        who = json_api(request)
        if isinstance(who, Response):
            return who
        name = request.path_params["name"]
        data = device_data(name)
        if data is None:
            return board.secure(JSONResponse({"error": f"no device named {name!r}",
                                              "hint": "GET /api/estate lists them"}, 404))
        status = view.snapshot.status_of(name)
        return board.secure(JSONResponse({
            "name": name, "device": data["device"],
            "status": status.to_dict() if status else None,
            "deployments": data["history"], "backups": data["backups"]}))

    async def api_certificate(request: Request) -> Response:
        who = json_api(request)
        if isinstance(who, Response):
            return who
        name = request.path_params["name"]
        data = certificate_data(name)
        if data is None:
            return board.secure(JSONResponse({"error": f"no certificate named {name!r}",
                                              "hint": "the inventory lists them"}, 404))
        return board.secure(JSONResponse(data))

    async def api_runs(request: Request) -> Response:
        who = json_api(request)
        if isinstance(who, Response):
            return who
        return board.secure(JSONResponse({"runs": view.runs(),
                                          "jobs": [j.to_dict() for j in board.jobs.all()]}))

    async def api_job(request: Request) -> Response:
        who = json_api(request)
        if isinstance(who, Response):
            return who
        job = board.jobs.get(int(request.path_params["id"]))
        if job is None:
            return board.secure(JSONResponse({"error": "no such action"}, 404))
        return board.secure(JSONResponse(job.to_dict()))

    async def metrics_page(request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        who = json_api(request)
        if isinstance(who, Response):
            return who
        return board.secure(Response(generate_latest(metrics),
                                     headers={"Content-Type": CONTENT_TYPE_LATEST}))

    routes = [
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", estate),
        Route("/timeline", timeline),
        Route("/devices/{name}", device_page),
        Route("/certificates/{name}", certificate_page),
        Route("/runs", runs_page),
        Route("/jobs/{id:int}", job_page),
        Route("/actions/{action}", act, methods=["POST"]),
        Route("/api/estate", api_estate),
        Route("/api/devices/{name}", api_device),
        Route("/api/certificates/{name}", api_certificate),
        Route("/api/runs", api_runs),
        Route("/api/jobs/{id:int}", api_job),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", metrics_page))
    app = Starlette(routes=routes)
    app.state.board = board
    return app
