"""API dialects: one module per API style, owning that style's request/response models, limits, error shape
and the translation to and from the internal Job/Result (see design.md, "How a request flows")."""

from __future__ import annotations

import threading

_lock = threading.Lock()


class PerService:
    """A dialect's API object exists once per Service: its HTTP routes and its UI tab share it (options,
    result stores and rate limits live in it)."""

    @classmethod
    def for_service(cls, service):
        attr = f"_api_{cls.__name__}"
        with _lock:
            api = getattr(service, attr, None)
            if api is None:
                api = cls(service)
                setattr(service, attr, api)
            return api
