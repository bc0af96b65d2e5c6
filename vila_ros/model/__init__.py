"""VILA1.5 in plain PyTorch: SigLIP tower + projector + Llama, checkpoints in the VILA1.5 3-part layout.

Kept import-light on purpose: ``vila_ros.model.cli`` is imported by ``vila-ros --help`` and must not pull torch.
Import the submodules you need (``vila_ros.model.checkpoint``, ``vila_ros.model.vila`` ...).
"""
