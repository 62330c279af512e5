"""dsserve: a production deployment stack for DeepSeek-family LLMs on Ray Serve and vLLM.

The public surface is small on purpose; everything else lives in modules named for their one job.
Nothing here imports Ray or vLLM, so `dsserve validate` and the renderers start in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec, load_spec, parse_spec
    from dsserve.errors import (
        DsserveError,
        ExitCode,
        ModelBuildError,
        PortInUseError,
        SpecError,
        StackError,
        StackSetupError,
        UsageError,
    )

__version__ = "0.1.0"

# Loaded on first use, so a module of this package that needs none of them (dsserve-haproxy, which Ray
# Serve runs at every HAProxy start and must answer within its startup timeout) does not pay for pydantic.
_LAZY = {
    "DeploymentSpec": "dsserve.config",
    "load_spec": "dsserve.config",
    "parse_spec": "dsserve.config",
    "DsserveError": "dsserve.errors",
    "ExitCode": "dsserve.errors",
    "ModelBuildError": "dsserve.errors",
    "PortInUseError": "dsserve.errors",
    "SpecError": "dsserve.errors",
    "StackError": "dsserve.errors",
    "StackSetupError": "dsserve.errors",
    "UsageError": "dsserve.errors",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dsserve' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "__version__",
    "DeploymentSpec",
    "DsserveError",
    "ExitCode",
    "ModelBuildError",
    "PortInUseError",
    "SpecError",
    "StackError",
    "StackSetupError",
    "UsageError",
    "load_spec",
    "parse_spec",
]
