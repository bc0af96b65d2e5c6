"""Training submodule: VILA's three stages and domain SFT as YAML recipes (``config/train/``).

- ``data``: LLaVA-style JSON datasets and an on-the-fly simulator dataset, tokenized with the checkpoint's
  conversation template (labels only on the assistant's answers), collated with right padding.
- ``recipe``: YAML recipes (stages, freezing, LRs, budgets), ``--set key=value`` overrides.
- ``trainer``: AdamW + cosine schedule with warmup, bf16 autocast, gradient accumulation, clipping, checkpoints and
  resume (safetensors + JSON only), a JSON-lines metrics log, validation loss, DDP under ``torchrun``.
- ``lora``: hand-written LoRA on the LLM's linear layers, merged into the weights when saving.
- ``cli``: ``vila-ros train``.
"""
