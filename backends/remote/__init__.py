"""Remote gateways: their configuration (config.py), one HTTP client each (client.py), every error shape they
answer (errors.py, the one upstream-error parser), and the relay that forwards or translates requests (relay.py,
styles.py). It knows no style's fields: each style's reverse pair is its dialect's, handed in as a codec."""

from .config import GatewayConfig, RelayConfig, parse_relay_config
from .errors import UpstreamError
from .relay import Relay

__all__ = ["GatewayConfig", "RelayConfig", "Relay", "UpstreamError", "parse_relay_config"]
