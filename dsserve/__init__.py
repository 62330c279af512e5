"""dsserve: a production deployment stack for DeepSeek-family LLMs on Ray Serve and vLLM.

The public surface is small on purpose; everything else lives in modules named for their one job.
Nothing here imports Ray or vLLM, so `dsserve validate` and the renderers start in a fraction of a second.
"""

from dsserve.config import DeploymentSpec, load_spec, parse_spec
from dsserve.errors import DsserveError, ModelBuildError, PortInUseError, SpecError, StackError

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "DeploymentSpec",
    "DsserveError",
    "ModelBuildError",
    "PortInUseError",
    "SpecError",
    "StackError",
    "load_spec",
    "parse_spec",
]
