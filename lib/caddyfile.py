"""The Caddyfile of the HTTPS proxy in front of the app."""

from __future__ import annotations

ADMIN = "127.0.0.1:2019"


def caddyfile(*, domain: str, acme_email: str, upstream: str) -> str:
    """Automatic certificates for `domain`, everything proxied to `upstream`.

    The upstream is a Docker network alias: Caddy resolves it on every dial, so while a new app
    container and the old one overlap during a replacement both receive requests, and a failed
    dial is retried for up to 30 s instead of being answered with an error. HTTP/3 is off because
    the firewall opens only TCP.
    """
    return f"""\
{{
	email {acme_email}
	admin {ADMIN}
	servers {{
		protocols h1 h2
	}}
}}

{domain} {{
	encode zstd gzip
	reverse_proxy {upstream} {{
		lb_try_duration 30s
		lb_try_interval 250ms
	}}
}}
"""
