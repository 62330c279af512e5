"""Import path kept for Serve YAML rendered before the request path moved to :mod:`dsserve.serving`.

Deployed configs name ``dsserve.routing:NonBlockingPrefixCacheAffinityRouter``
(``request_router_config.request_router_class``); the class lives in :mod:`dsserve.serving.routing`.
"""

from dsserve.serving.routing import NonBlockingPrefixCacheAffinityRouter

__all__ = ["NonBlockingPrefixCacheAffinityRouter"]
