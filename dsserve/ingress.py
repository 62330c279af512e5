"""Import path kept for Serve YAML rendered before the request path moved to :mod:`dsserve.serving`.

Deployed configs name ``dsserve.ingress:DsserveIngress``; the class lives in
:mod:`dsserve.serving.ingress`. New renders name the new path.
"""

from dsserve.serving.ingress import DsserveIngress

__all__ = ["DsserveIngress"]
