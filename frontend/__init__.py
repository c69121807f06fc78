"""Frontend: the Gradio app (mounted at /ui); it talks to the backend over HTTP only."""

import os

# Offline by design (ARCHITECTURE.md section 8): set before any frontend module imports gradio
# (it reads these at import time) and gradio_client (hub telemetry).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
