"""Scenarios shipped with ciliumpy, installed as package data.

The seed scenario is a small microservice shop (``production`` namespace, an ingress
controller, L3/L4, L7 HTTP and gRPC, DNS with ``toFQDNs``, a clusterwide policy) that
``ciliumpy demo`` runs. Its manifests are real files inside the package, so it works from
any directory once ciliumpy is installed:

>>> import ciliumpy
>>> from ciliumpy.examples import SEED_DNS_RECORDS, seed_path
>>> cluster = ciliumpy.Cluster.from_manifests(seed_path())
>>> cluster.check("production/frontend", "production/backend", 8080).verdict
'FORWARDED'
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["SEED_DNS_RECORDS", "SEED_FLOWS", "SeedFlow", "seed_path"]

#: One flow of the seed tour: source, destination, port, protocol, HTTP/gRPC request or
#: ``None``, and what the flow demonstrates.
SeedFlow = tuple[str, str, int, str, "dict[str, str] | None", str]


def seed_path() -> Path:
    """The directory holding the seed scenario's manifests (package data, not a symlink)."""
    return Path(str(resources.files(__name__) / "seed"))


#: Upstream answers for the names the seed scenario's ``toFQDNs`` rules and tour use.
SEED_DNS_RECORDS: dict[str, list[str]] = {
    "api.stripe.com": ["198.51.100.10"],
    "s3.amazonaws.com": ["198.51.100.20"],
    "s3.us-east-1.amazonaws.com": ["198.51.100.21"],
    "evil-site.com": ["198.51.100.66"],
}

_API = "production/api-gateway"
_FRONTEND = "production/frontend"
_BACKEND = "production/backend"

#: The tour ``ciliumpy demo`` prints: every kind of decision the seed policies make.
SEED_FLOWS: list[SeedFlow] = [
    (_FRONTEND, _BACKEND, 8080, "TCP", None, "L3/L4 allow"),
    (_FRONTEND, "production/database", 5432, "TCP", None, "default deny"),
    (_BACKEND, "production/database", 5432, "TCP", None, "L3/L4 allow"),
    ("production/database", _BACKEND, 8080, "TCP", None, "default deny (egress)"),
    ("world", _FRONTEND, 8080, "TCP", None, "CCNP denies world"),
    ("world", "ingress-nginx/ingress-nginx-controller", 80, "TCP", None, "CCNP spares ingress-nginx"),
    (_FRONTEND, _API, 8080, "TCP", {"method": "GET", "path": "/api/products"}, "L7 HTTP"),
    (_FRONTEND, _API, 8080, "TCP", {"method": "POST", "path": "/api/orders"}, "L7 HTTP"),
    (_FRONTEND, _API, 8080, "TCP", {"method": "GET", "path": "/api/users/42"}, "L7 HTTP regex"),
    (_FRONTEND, _API, 8080, "TCP", {"method": "GET", "path": "/api/users/admin"}, "L7 HTTP regex"),
    (_FRONTEND, _API, 8080, "TCP", {"method": "DELETE", "path": "/api/orders"}, "L7 HTTP"),
    (_FRONTEND, _API, 8080, "TCP", None, "L7 without request"),
    (_FRONTEND, _BACKEND, 50051, "TCP", {"grpc": "/mypackage.MyService/GetItems"}, "gRPC"),
    (_FRONTEND, _BACKEND, 50051, "TCP", {"grpc": "/mypackage.MyService/DeleteItem"}, "gRPC"),
    (_BACKEND, "api.stripe.com", 443, "TCP", None, "DNS + toFQDNs"),
    (_BACKEND, "s3.amazonaws.com", 443, "TCP", None, "DNS + toFQDNs pattern"),
    (_BACKEND, "s3.us-east-1.amazonaws.com", 443, "TCP", None, "'*' spans one label only"),
    (_BACKEND, "evil-site.com", 443, "TCP", None, "DNS refused"),
    (_BACKEND, "198.51.100.66", 443, "TCP", None, "IP never resolved"),
    (_API, "production/product-service", 8080, "TCP", None, "microservice"),
    (_API, "production/order-service", 8080, "TCP", None, "microservice"),
    ("production/product-service", "production/user-service", 8080, "TCP", None, "microservice"),
]
