"""Frontend: the Gradio app (mounted at /ui); it talks to the backend over HTTP only."""
