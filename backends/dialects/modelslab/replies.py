"""The bodies of ModelsLab's answers that are not errors (docs/reference/hosted_apis.md §C.3): `processing` (with
the fetch URL and the future links), `failed` (on fetch), and the webhook's payload."""

from __future__ import annotations

from typing import Any

from .jobs import Record
from .options import PROCESSING_MESSAGE, PROCESSING_TIP


def processing_body(record: Record, eta: float, fetch_result: str) -> dict[str, Any]:
    return {
        "status": "processing",
        "tip": PROCESSING_TIP,
        "tip_1": f"Fetch {fetch_result} with your key after about {eta:g} s",
        "eta": eta,
        "message": PROCESSING_MESSAGE,
        "messege": PROCESSING_MESSAGE,
        "webhook_status": record.webhook_status,
        "fetch_result": fetch_result,
        "id": record.id,
        "output": [],
        "future_links": list(record.links),
        "meta": record.meta,
    }


def _failure(record: Record) -> str:
    return record.error.message if record.error else "generation failed"


def failed_body(record: Record) -> dict[str, Any]:
    message = _failure(record)
    return {"status": "failed", "id": record.id, "message": message, "messege": message, "output": [],
            "meta": record.meta}


def webhook_payload(record: Record) -> dict[str, Any]:
    if record.status == "success" and record.response:
        r = record.response
        return {"status": "success", "id": record.id, "output": r["output"], "generationTime": r["generationTime"],
                "track_id": record.track_id, "meta": r["meta"]}
    message = _failure(record)
    return {"status": "failed", "id": record.id, "message": message, "messege": message, "track_id": record.track_id}
