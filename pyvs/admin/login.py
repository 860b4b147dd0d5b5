"""The dashboard's sign-in when the admin endpoint requires a token.

A browser cannot add ``Authorization: Bearer`` to a page load or to an EventSource, so
with ``admin.token_file`` a browser that asks for HTML gets, with its 401, a form that
posts the token to ``POST /login``. The right token is answered with a session cookie
(``HttpOnly``, ``SameSite=Strict``) whose value is an HMAC of the token, never the
token itself; the bearer middleware accepts either. The cookie is only good for as long
as the token is: changing ``admin.token_file`` (and restarting) signs everyone out.

Cross-site use of the cookie is refused twice: browsers do not send a ``SameSite=Strict``
cookie from another site, and the admin API refuses requests whose ``Origin`` is another
origin (a page on another port of the same host is another origin).
"""

from __future__ import annotations

import hashlib
import hmac

from aiohttp import web

COOKIE = "pyvs_admin"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="pyvs admin"'}

FORM = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pyvs admin: sign in</title>
<style>body{{font:15px system-ui,sans-serif;background:#101418;color:#e6e9ec;display:grid;place-items:center;
height:100vh;margin:0}}form{{background:#182028;padding:1.5em 2em;border-radius:6px}}
input{{width:22em;padding:.3em;margin:.6em 0;background:#0d1117;color:#e6e9ec;border:1px solid #33404d}}
.err{{color:#f85149}}</style></head>
<body><form method="post" action="/login"><h1>pyvs admin</h1>
<p>This endpoint needs the token of <code>admin.token_file</code>.</p>{error}
<input type="password" name="token" id="token" autocomplete="current-password" autofocus required><br>
<button type="submit" id="signin">Sign in</button></form></body></html>
"""


def session_value(token: bytes) -> str:
    """The cookie value that stands for ``token`` (an HMAC of it: the cookie is not the token)."""
    return hmac.new(token, b"pyvs admin dashboard session", hashlib.sha256).hexdigest()


def has_session(request: web.Request, session: str) -> bool:
    given = request.cookies.get(COOKIE, "")
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), session.encode())


def unauthorized(request: web.Request, error: str = "") -> web.Response:
    """401: the sign-in form for a browser, one line of text for anything else."""
    if "text/html" in request.headers.get("Accept", ""):
        return web.Response(status=401, text=FORM.format(error=f'<p class="err">{error}</p>' if error else ""),
                            content_type="text/html", headers=CHALLENGE)
    return web.Response(status=401, text="401 Unauthorized: send Authorization: Bearer <token from "
                        "admin.token_file>\n", headers=CHALLENGE)


async def login(request: web.Request, token: bytes, session: str) -> web.Response:
    """``POST /login`` (form field ``token``): the session cookie and a redirect to the dashboard."""
    form = await request.post()
    given = str(form.get("token", "")).strip().encode("utf-8", "surrogateescape")
    if not hmac.compare_digest(given, token):
        return unauthorized(request, "Wrong token.")
    resp = web.Response(status=303, headers={"Location": "/"})
    resp.set_cookie(COOKIE, session, httponly=True, samesite="Strict", path="/", secure=request.secure)
    return resp
