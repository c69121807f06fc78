"""/models, /rewards, /presets, /prompt-sets: what a job can choose (treegrpo.config.catalog)."""

from __future__ import annotations

from functools import cache
from typing import Any

from fastapi import APIRouter

from backend.api.deps import ReadKey
from backend.schemas import (
    NamesPublic,
    PresetPublic,
    PresetsPublic,
    PromptSetPublic,
    PromptSetsPublic,
)
from treegrpo.config import catalog

router = APIRouter(tags=["catalog"])


@cache
def _catalog() -> dict[str, Any]:
    # Built-in names only: fixed for the life of the process, so computed once.
    return catalog()


@router.get("/models", response_model=NamesPublic, summary="Built-in model names")
async def models(_key: ReadKey) -> NamesPublic:
    return NamesPublic(data=list(_catalog()["models"]))


@router.get("/rewards", response_model=NamesPublic, summary="Reward names")
async def rewards(_key: ReadKey) -> NamesPublic:
    return NamesPublic(data=list(_catalog()["rewards"]))


@router.get("/presets", response_model=PresetsPublic, summary="Presets and their full configs")
async def presets(_key: ReadKey) -> PresetsPublic:
    return PresetsPublic(
        data=[
            PresetPublic(name=name, config=config) for name, config in _catalog()["presets"].items()
        ]
    )


@router.get("/prompt-sets", response_model=PromptSetsPublic, summary="Named prompt sets")
async def prompt_sets(_key: ReadKey) -> PromptSetsPublic:
    return PromptSetsPublic(
        data=[
            PromptSetPublic(name=name, prompts=list(prompts))
            for name, prompts in _catalog()["prompt_sets"].items()
        ]
    )
