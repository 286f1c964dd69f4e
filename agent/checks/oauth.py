"""OAuth2 client credentials for HTTP checks, as canary-checker's `oauth2` field asks."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import httpx

from agent.checks.limits import ResponseLimits, read_body


class TokenError(Exception):
    """The token endpoint did not hand out an access token."""


async def client_credentials_token(
    client: httpx.AsyncClient,
    oauth2: Mapping[str, Any],
    client_id: str,
    client_secret: str,
    timeout: float | None,
    limits: ResponseLimits,
) -> str:
    """Request an access token with the client-credentials grant (RFC 6749 §4.4).

    The client authenticates with HTTP basic auth, as Go's oauth2 package tries first.

    Args:
        client: The HTTP client to send the token request with.
        oauth2: The check's `oauth2` (`tokenURL`, optional `scope` list and `params`).
        client_id: The check's `username`.
        client_secret: The check's `password`.
        timeout: Seconds to wait for the token endpoint.
        limits: How much of the endpoint's answer to read.

    Returns:
        The access token.

    Raises:
        TokenError: the endpoint answered without a token.
        ResponseTooLarge: the answer went past one of `limits`.
    """
    url = str(oauth2["tokenURL"])
    form = {"grant_type": "client_credentials", **dict(oauth2.get("params") or {})}
    scopes = oauth2.get("scope") or []
    if scopes:
        form["scope"] = " ".join(str(scope) for scope in scopes)
    request = client.build_request("POST", url, data=form, timeout=timeout)
    auth = httpx.BasicAuth(client_id, client_secret)
    response = await client.send(request, auth=auth, stream=True)
    try:
        if response.status_code != 200:
            raise TokenError(f"token request to {url} answered {response.status_code}")
        body = await read_body(response, limits)
    finally:
        await response.aclose()
    try:
        answer = json.loads(body)
        token = answer.get("access_token") if isinstance(answer, dict) else None
    except ValueError as error:
        raise TokenError(f"token request to {url} did not answer JSON") from error
    if not isinstance(token, str) or not token:
        raise TokenError(f"token request to {url} gave no access_token")
    return token
