"""One module per tab of the web UI (webui/ui.py assembles them)."""
