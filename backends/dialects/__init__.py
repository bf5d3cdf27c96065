"""API dialects: one module per API style, owning that style's request/response models, limits, error shape
and the translation to and from the internal Job/Result (see design.md, "How a request flows")."""
