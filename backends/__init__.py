"""sdgate backends: the Job/Result contract, the job queue, the local diffusers engine, the API dialects."""

import logging


class _NoTorchvisionNotice(logging.Filter):
    # sdgate keeps torchvision out on purpose (it drags in a CUDA torch); transformers announces the
    # PIL fallback it then uses on every start. Nothing for a user to act on.
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionNotice())
