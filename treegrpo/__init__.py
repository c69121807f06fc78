"""TreeGRPO core: tree-advantage GRPO for diffusion and flow models (arXiv 2512.08153).

Pure library: no web, database or queue code. `treegrpo.config` is torch-free so that the API can
validate job configs without importing torch.
"""

__version__ = "0.1.0"
