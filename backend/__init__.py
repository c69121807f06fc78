"""Backend: FastAPI app (REST API under /api/v1), SQLAlchemy models, CRUD, settings and auth."""
