"""The consent page: a small server-rendered HTML form (every value escaped)."""

from __future__ import annotations

from html import escape

from gateway.partner.oauth_service import AuthorizeRequest
from gateway.partner.scopes import PARTNER_SCOPES

__all__ = ["PAGE_HEADERS", "consent_page", "error_page"]

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",  # no clickjacking of the consent button
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:28rem;margin:2rem auto;padding:0 1rem}"
    "label{display:block;margin:.5rem 0}input{width:100%;padding:.4rem}"
    "button{padding:.6rem 1.2rem;margin:.8rem .5rem 0 0}"
)


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def consent_page(req: AuthorizeRequest, message: str = "") -> str:
    hidden = {
        "response_type": "code",
        "client_id": req.client.client_id,
        "redirect_uri": req.redirect_uri,
        "scope": " ".join(req.scopes),
        "state": req.state,
        "code_challenge": req.code_challenge,
        "code_challenge_method": "S256",
    }
    inputs = "".join(
        f'<input type=hidden name="{escape(k)}" value="{escape(v)}">' for k, v in hidden.items()
    )
    scopes = "".join(f"<li>{escape(PARTNER_SCOPES[s])}</li>" for s in req.scopes)
    note = f"<p role=alert><strong>{escape(message)}</strong></p>" if message else ""
    return _page(
        "Allow access?",
        f"<h1>Allow “{escape(req.client.name)}” to read your data?</h1>"
        f"<p>It will be able to read:</p><ul>{scopes}</ul>"
        "<p>It will <strong>not</strong> be able to dose insulin or change any setting.</p>"
        f"{note}"
        '<form method=post action="/oauth/authorize">'
        f"{inputs}"
        "<label>E-mail <input name=email type=email autocomplete=username required></label>"
        "<label>Password <input name=password type=password autocomplete=current-password "
        "required></label>"
        "<button name=decision value=allow>Allow</button>"
        "<button name=decision value=deny>Deny</button>"
        "</form>"
        f"<p><small>Redirects to {escape(req.redirect_uri)}</small></p>",
    )


def error_page(message: str) -> str:
    return _page(
        "Authorization request refused",
        f"<h1>This request was refused</h1><p>{escape(message)}</p>"
        "<p>Nothing was shared. Go back to the app that sent you here.</p>",
    )
