"""The dashboard's stylesheet, kept in frontend/static/studio.css (passed to Gradio as `css`; no
external font or asset)."""

from __future__ import annotations

from frontend.static import read_static

CSS = read_static("studio.css")
