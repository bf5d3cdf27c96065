"""API dialects: one package per API style, each implementing the one `Dialect` contract (base.py) and found
through the registry (registry.py). A style owns its request/response models, limits, error shape and the
translation to and from the internal Job/Result (docs/architecture.md, docs/adding-a-style.md)."""
