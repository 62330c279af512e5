"""Import path kept for Serve YAML rendered before the request path moved to :mod:`dsserve.serving`.

Deployed configs name ``dsserve.server:LLMServer`` (``LLMConfig.server_cls``); the class lives in
:mod:`dsserve.serving.server`. New renders name the new path.
"""

from dsserve.serving.server import LLMServer

__all__ = ["LLMServer"]
