"""Remote gateways: their configuration (config.py), one HTTP client each (client.py), every error shape they
answer (errors.py), the relay that forwards or translates requests (relay.py, styles.py), which backend a job
runs on (routing.py), and the one call an HTTP route makes (http.py)."""

from .config import GatewayConfig, RelayConfig, parse_relay_config
from .errors import UpstreamError
from .relay import Relay

__all__ = ["GatewayConfig", "RelayConfig", "Relay", "UpstreamError", "parse_relay_config"]
