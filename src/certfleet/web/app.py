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
    """One server: config, users, sessions, the shared view, the jobs, and every route."""

    def __init__(self, config: WebConfig, view: EstateView, metrics: Any = None) -> None:
        self.config = config
        self.view = view
        self.metrics = metrics
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

    def need_login(self, request: Request) -> Response:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)

    def json_api(self, request: Request) -> Account | Response:
        account, _ = self.account(request, api=True)
        if account is None:
            return self.secure(JSONResponse(
                {"error": "not logged in", "hint": "log in, or send Authorization: Bearer "
                 "TOKEN (certfleet serve token NAME)"}, 401))
        return account

    def viewer(self, request: Request) -> Account | Response:
        account, _ = self.account(request)
        return account if account is not None else self.need_login(request)

    def not_found(self, request: Request, what: str) -> Response:
        return self.page(request, "error.html", 404, title="Not found", message=what)

    # ---- login -------------------------------------------------------------------------

    async def login_form(self, request: Request, error: str | None = None,
                         status: int = 200) -> Response:
        import secrets

        token = secrets.token_urlsafe(32)
        nxt = request.query_params.get("next", "/")
        response = self.page(request, "login.html", status, title="Log in", error=error,
                             login_csrf=token, next=nxt if nxt.startswith("/") else "/")
        self.cookie(response, LOGIN_COOKIE, token, 600)
        return response

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return await self.login_form(request)
        form = await request.form()
        if not same_token(str(form.get("csrf", "")), request.cookies.get(LOGIN_COOKIE, "")):
            return await self.login_form(request, "the form expired or lacks its CSRF token: "
                                         "log in again", 403)
        name = str(form.get("username", ""))
        client = request.client.host if request.client else "?"
        keys = (f"user:{name}", f"client:{client}")
        wait = self.throttle.wait(*keys)
        if wait > 0:
            return await self.login_form(request, f"too many failed logins: try again in "
                                         f"{int(wait) + 1} s", 429)
        try:
            account = self.users.login(name, str(form.get("password", "")))
        except CertfleetError as exc:
            return await self.login_form(request, exc.message, 500)
        if account is None:
            self.throttle.failed(*keys)
            return await self.login_form(request, "wrong user name or password", 401)
        self.throttle.succeeded(*keys)
        sid, _ = self.sessions.new(account)
        nxt = str(form.get("next") or "/")
        response = RedirectResponse(nxt if nxt.startswith("/") and not nxt.startswith("//")
                                    else "/", status_code=303)
        self.cookie(response, SESSION_COOKIE, sid, None)
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return self.secure(response)

    async def logout(self, request: Request) -> Response:
        account, csrf = self.account(request)
        form = await request.form()
        if account is not None and not same_token(str(form.get("csrf", "")), csrf):
            return self.page(request, "error.html", 403, title="Refused",
                             message="the form lacks its CSRF token: reload the page")
        self.sessions.end(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return self.secure(response)

    # ---- pages ---------------------------------------------------------------------------

    def estate_context(self, request: Request) -> dict[str, Any]:
        tag = request.query_params.get("tag") or None
        kind = request.query_params.get("kind") or None
        tags, kinds = self.view.filters()
        snapshot = self.view.snapshot
        inventory = snapshot.inventory
        rows = self.view.estate_rows(tag, kind)
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
            "scan_error": snapshot.error, "refresh_minutes": f"{self.config.refresh_minutes:g}",
            "certificates": sorted(inventory.certificates) if inventory else [],
        }

    async def estate(self, request: Request) -> Response:
        who = self.viewer(request)
        if isinstance(who, Response):
            return who
        return self.page(request, "estate.html", title="Estate",
                         message=request.query_params.get("message"),
                         **self.estate_context(request))

    async def timeline(self, request: Request) -> Response:
        who = self.viewer(request)
        if isinstance(who, Response):
            return who
        data = self.view.timeline()
        return self.page(request, "timeline.html", title="Timeline", days=data["days"],
                         svg=timeline_svg(data))

    def device_data(self, name: str) -> dict[str, Any] | None:
        inventory = self.view.snapshot.inventory
        device = inventory.devices.get(name) if inventory else None
        history = self.view.store.history(device=name, limit=100)
        if device is None and not history:
            return None
        return {
            "name": name,
            "device": {"kind": device.kind, "certificate": device.certificate,
                       "tags": list(device.tags)} if device else None,
            "rows": [r for r in self.view.estate_rows() if r["device"] == name],
            "history": history,
            "backups": [{"id": b.id, "created": b.created, "served_sha256": b.served_sha256,
                         "has_private_key": b.has_private_key, "encrypted": b.encrypted}
                        for b in self.view.store.backups(name)],
        }

    async def device_page(self, request: Request) -> Response:
        who = self.viewer(request)
        if isinstance(who, Response):
            return who
        data = self.device_data(request.path_params["name"])
        if data is None:
            return self.not_found(request, "no device of that name in the inventory or the history")
        return self.page(request, "device.html", title=f"Device {data['name']}",
                         message=request.query_params.get("message"), **data)

    def certificate_data(self, name: str) -> dict[str, Any] | None:
        inventory = self.view.snapshot.inventory
        spec = inventory.certificates.get(name) if inventory else None
        versions = self.view.store.versions(name)
        if spec is None and not versions:
            return None
        current = self.view.store.current_version(name)
        served: dict[str, list[dict[str, str]]] = {}
        for row in self.view.estate_rows():
            if row["sha256"]:
                served.setdefault(row["sha256"], []).append(
                    {"device": row["device"], "label": row["label"],
                     "listener": row["listener"]})
        return {
            "name": name,
            "spec": {"names": list(spec.names)} if spec else None,
            "versions": [{**v.to_dict(), "current": current is not None and v.id == current.id,
                          "served_on": served.get(v.leaf_sha256, [])} for v in versions],
            "plans": self.view.plans.get(name, []),
            "plan_error": self.view.plan_error,
            "findings": self.view.findings.get(name, []),
        }

    async def certificate_page(self, request: Request) -> Response:
        who = self.viewer(request)
        if isinstance(who, Response):
            return who
        data = self.certificate_data(request.path_params["name"])
        if data is None:
            return self.not_found(request, "no certificate of that name in the inventory or store")
        return self.page(request, "certificate.html", title=f"Certificate {data['name']}",
                         **data)

    async def runs_page(self, request: Request) -> Response:
        who = self.viewer(request)
        if isinstance(who, Response):
            return who
        return self.page(request, "runs.html", title="Runs", runs=self.view.runs(),
                         jobs=self.jobs.all())

    async def job_page(self, request: Request) -> Response:
        who = self.viewer(request)
        if isinstance(who, Response):
            return who
        job = self.jobs.get(int(request.path_params["id"]))
        if job is None:
            return self.not_found(request, "no such action on this server")
        return self.page(request, "job.html", title=job.title, job=job,
                         refresh=1 if job.running else None)

    # ---- actions -------------------------------------------------------------------------

    async def act(self, request: Request) -> Response:
        account, csrf = self.account(request)
        if account is None:
            return self.need_login(request)
        form = await request.form()
        if not same_token(str(form.get("csrf", "")), csrf):
            return self.page(request, "error.html", 403, title="Refused",
                             message="the form lacks its CSRF token: reload the page and "
                             "try again")
        if self.config.read_only:
            return self.page(request, "error.html", 403, title="Refused",
                             message="this dashboard is read-only (certfleet serve "
                             "--read-only)")
        if not account.operator:
            return self.page(request, "error.html", 403, title="Refused",
                             message=f"{account.name} is a viewer: only an operator may "
                             "start an action")
        action = request.path_params["action"]
        if action not in ACTIONS:
            return self.not_found(request, "no such action")
        target = str(form.get("target") or "") or None
        try:
            job = self.jobs.start(action, account, target)
        except Busy as busy:
            return self.page(request, "error.html", 409, title="Refused",
                             message=f"refused: another deploy holds the lock: {busy.holder}")
        except CertfleetError as exc:
            return self.page(request, "error.html", 400, title="Refused",
                             message=exc.message)
        return self.secure(RedirectResponse(f"/jobs/{job.id}", status_code=303))

    # ---- the JSON API ---------------------------------------------------------------------

    async def api_estate(self, request: Request) -> Response:
        who = self.json_api(request)
        if isinstance(who, Response):
            return who
        return self.secure(JSONResponse(self.view.snapshot.to_dict()))

    async def api_device(self, request: Request) -> Response:
        who = self.json_api(request)
        if isinstance(who, Response):
            return who
        name = request.path_params["name"]
        data = self.device_data(name)
        if data is None:
            return self.secure(JSONResponse({"error": f"no device named {name!r}",
                                             "hint": "GET /api/estate lists them"}, 404))
        status = self.view.snapshot.status_of(name)
        return self.secure(JSONResponse({
            "name": name, "device": data["device"],
            "status": status.to_dict() if status else None,
            "deployments": data["history"], "backups": data["backups"]}))

    async def api_certificate(self, request: Request) -> Response:
        who = self.json_api(request)
        if isinstance(who, Response):
            return who
        name = request.path_params["name"]
        data = self.certificate_data(name)
        if data is None:
            return self.secure(JSONResponse({"error": f"no certificate named {name!r}",
                                             "hint": "the inventory lists them"}, 404))
        return self.secure(JSONResponse(data))

    async def api_runs(self, request: Request) -> Response:
        who = self.json_api(request)
        if isinstance(who, Response):
            return who
        return self.secure(JSONResponse({"runs": self.view.runs(),
                                         "jobs": [j.to_dict() for j in self.jobs.all()]}))

    async def api_job(self, request: Request) -> Response:
        who = self.json_api(request)
        if isinstance(who, Response):
            return who
        job = self.jobs.get(int(request.path_params["id"]))
        if job is None:
            return self.secure(JSONResponse({"error": "no such action"}, 404))
        return self.secure(JSONResponse(job.to_dict()))

    async def metrics_page(self, request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        who = self.json_api(request)
        if isinstance(who, Response):
            return who
        return self.secure(Response(generate_latest(self.metrics),
                                    headers={"Content-Type": CONTENT_TYPE_LATEST}))


def create_app(config: WebConfig, view: EstateView | None = None,
               metrics: Any = None) -> Starlette:
    """The application; ``view`` (the shared scan) is made read-only from ``config`` if None.

    ``metrics`` (a prometheus_client registry, ``serve --metrics``) is served at
    ``/metrics`` to a logged-in user or a bearer token, as ``certfleet exporter`` does.
    """
    if view is None:
        view = EstateView(config.inventory, config.open_reader(),
                          refresh=config.refresh_minutes * 60)
    board = Dashboard(config, view, metrics)
    routes = [
        Route("/login", board.login, methods=["GET", "POST"]),
        Route("/logout", board.logout, methods=["POST"]),
        Route("/", board.estate),
        Route("/timeline", board.timeline),
        Route("/devices/{name}", board.device_page),
        Route("/certificates/{name}", board.certificate_page),
        Route("/runs", board.runs_page),
        Route("/jobs/{id:int}", board.job_page),
        Route("/actions/{action}", board.act, methods=["POST"]),
        Route("/api/estate", board.api_estate),
        Route("/api/devices/{name}", board.api_device),
        Route("/api/certificates/{name}", board.api_certificate),
        Route("/api/runs", board.api_runs),
        Route("/api/jobs/{id:int}", board.api_job),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", board.metrics_page))
    app = Starlette(routes=routes)
    app.state.board = board
    return app
