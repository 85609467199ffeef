"""Where a Space's app answers: the operator's own URL template and the Hub's subdomain of the Space.

The Hub serves a Space's app at `https://{subdomain}.hf.space` (the Hub's "Embed this Space" /
direct URL; gradio_client and huggingface_hub's `SpaceInfo.subdomain` / `host`). `subdomain` is an
expandable property of the Space listing while `host` is not, so the operator builds the address
itself, from one option (`sandbox_url_template`, an emulator sets its own) and the subdomain the Hub
reports for the session's own Space. That URL receives the sandbox token and the platform's read
token: a subdomain that is not a DNS label (a dot, a slash, `@`, a port) could move the request to
another host or path, so it is refused, and nothing else ever reaches the URL.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

#: The one field of the template.
SUBDOMAIN_FIELD = "{subdomain}"
#: The Hub's app address (docs/hub-fidelity.md F36).
DEFAULT_TEMPLATE = "https://" + SUBDOMAIN_FIELD + ".hf.space"
#: A DNS label (RFC 1035 as relaxed by RFC 1123): letters, digits and inner hyphens, 1 to 63 characters.
_DNS_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def check_template(template: str) -> str:
    """The template, if it is an http(s) URL with `{subdomain}` exactly once and no other field."""
    rest = template.replace(SUBDOMAIN_FIELD, "", 1)
    if SUBDOMAIN_FIELD not in template or "{" in rest or "}" in rest:
        raise ValueError(f"the sandbox URL template must hold {SUBDOMAIN_FIELD} once and no other field")
    sample = urlsplit(template.replace(SUBDOMAIN_FIELD, "x"))
    if sample.scheme not in ("http", "https") or not sample.hostname or sample.query or sample.fragment:
        raise ValueError("the sandbox URL template must be an http(s) URL without query or fragment")
    return template


def is_dns_label(subdomain: str) -> bool:
    return _DNS_LABEL.fullmatch(subdomain) is not None


def sandbox_url(template: str, subdomain: str | None) -> str | None:
    """The Space's app address, or None when the Hub gave no subdomain or one that is not a DNS label."""
    if not subdomain or not is_dns_label(subdomain):
        return None
    return template.replace(SUBDOMAIN_FIELD, subdomain)
