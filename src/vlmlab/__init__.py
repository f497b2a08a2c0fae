"""vlmlab: Hydra + PyTorch Lightning post-training of Qwen-VL models.

Importing vlmlab first makes torchvision importable on a CPU-only torch; see
``vlmlab.compat.torchvision_ops`` for why and what it does (nothing on a CUDA torch). It also registers
vlmlab's one OmegaConf resolver, ``${vlmlab.gpus_per_node:...}``, which the launcher configs use
(``vlmlab.launchers``).
"""

from vlmlab.compat.torchvision_ops import register_torchvision_op_schemas
from vlmlab.launchers import register_resolvers

register_torchvision_op_schemas()
register_resolvers()

__version__ = "0.1.0"
