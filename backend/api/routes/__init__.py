"""One route module per resource; `api_router` gathers them under /api/v1."""

from fastapi import APIRouter

from backend.api.routes import (
    artifacts,
    audit,
    catalog,
    compare,
    datasets,
    experiments,
    health,
    jobs,
    keys,
    me,
    trees,
)

api_router = APIRouter()
for module in (
    jobs,
    trees,
    compare,
    experiments,
    artifacts,
    catalog,
    health,
    me,
    keys,
    audit,
    datasets,
):
    api_router.include_router(module.router)

__all__ = ["api_router"]
