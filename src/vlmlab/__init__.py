"""vlmlab: Hydra + PyTorch Lightning post-training of Qwen-VL models.

Importing vlmlab first makes torchvision importable on a CPU-only torch; see
``vlmlab.compat.torchvision_ops`` for why and what it does (nothing on a CUDA torch).
"""

from vlmlab.compat.torchvision_ops import register_torchvision_op_schemas

register_torchvision_op_schemas()

__version__ = "0.1.0"
