"""Credentials out of anything logged: the one helper every URL passes through before it is
printed, logged or put in an event (stream sources, HTTP hook sinks, sync URLs, errors)."""
from __future__ import annotations

import re

# user:password@ (or a bare token@) after a scheme, anywhere in the text (GStreamer pipelines hold URLs)
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
# query parameters that carry secrets, in a URL or in an error message quoting one
SECRET_PARAMS = ("api_key", "apikey", "api-key", "key", "token", "access_token", "auth", "password", "passwd",
                 "secret", "signature", "sig", "client_secret")
_QUERY = re.compile(r"(?P<lead>[?&;](?:" + "|".join(re.escape(p) for p in SECRET_PARAMS) + r")=)[^&#\s'\"]*",
                    re.IGNORECASE)


def redact_url(text: str) -> str:
    """``text`` with URL credentials (user:password@, secret query values) replaced by ``***``.

    >>> redact_url("https://u:pw@hooks.example/x?api_key=abc&n=1")
    'https://***@hooks.example/x?api_key=***&n=1'
    """
    return _QUERY.sub(r"\g<lead>***", _USERINFO.sub(r"\g<scheme>***@", str(text)))
