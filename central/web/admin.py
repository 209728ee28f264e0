"""Accounts in the dashboard, for administrators.

An administrator is a user whose unit is a root of the plan (a district with
no parent): the scope that already sees every unit, every agent and every
alarm, so managing who may log in adds no reach it did not have. Anyone else
gets 403. An administrator cannot disable or remove their own account (a
district must not lock itself out by a slip); the command line can.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from central.web import UserError
from central.web.auth import user_of
from central.web.csrf import csrf_protected
from central.web.pages import _common, renderer, translator
from central.web.users import PASSWORD_MAX_CHARS, UserBook

_LOGGER = logging.getLogger(__name__)

ACTIONS = ("disable", "enable", "remove", "passwd")


def is_admin(request: Request) -> bool:
    return bool(request.app.state.dashboard.scope(user_of(request).unit).is_top)


def _forbidden(request: Request) -> Response:
    return HTMLResponse(translator(request)("Only an administrator (a user of the plan's top unit) may manage accounts."),
                        status_code=403)


async def users_page(request: Request) -> Response:
    if not await run_in_threadpool(is_admin, request):
        return _forbidden(request)
    d = request.app.state.dashboard
    book: UserBook = request.app.state.users

    def build() -> dict[str, Any]:
        scope = d.scope(user_of(request).unit)
        plan = scope.plan
        users = [{"name": u.name, "unit": u.unit, "unit_name": d.unit_name(plan, u.unit), "disabled": u.disabled}
                 for u in book.list()]
        return {**_common(d, scope, "users"), "users": users, "me": user_of(request).name,
                "done": request.query_params.get("done", "")[:64], "error": request.query_params.get("error", "")[:200]}

    return renderer(request).render(request, "users.html", await run_in_threadpool(build))


@csrf_protected
async def user_action(request: Request) -> Response:
    """POST /users/<name>/<disable|enable|remove|passwd>, then back to the list."""
    if not await run_in_threadpool(is_admin, request):
        return _forbidden(request)
    name, action = request.path_params["name"], request.path_params["action"]
    if action not in ACTIONS:
        return HTMLResponse(translator(request)("Not found."), status_code=404)
    me = user_of(request).name
    book: UserBook = request.app.state.users
    t = translator(request)
    if action in ("disable", "remove") and name == me:
        return RedirectResponse(f"/users?error={quote(t('You cannot do that to your own account.'))}", status_code=303)
    form = await request.form(max_files=0, max_fields=4)
    password = str(form.get("password", ""))[:PASSWORD_MAX_CHARS + 1]

    def act() -> None:
        if action == "passwd":
            book.set_password(name, password)
        else:
            getattr(book, action)(name)

    try:
        await run_in_threadpool(act)
    except UserError as exc:
        return RedirectResponse(f"/users?error={quote(str(exc))}", status_code=303)
    _LOGGER.info("account %s: %s by %s", name, action, me)
    return RedirectResponse(f"/users?done={action}", status_code=303)


def admin_routes() -> list[Route]:
    return [
        Route("/users", users_page),
        Route("/users/{name:path}/{action}", user_action, methods=["POST"]),  # a name may hold "/"
    ]
