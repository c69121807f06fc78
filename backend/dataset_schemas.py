"""Request and answer bodies of /datasets (their own module: schemas.py is the jobs')."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

# A name is not all digits (`prompts: {dataset: 12}` is an id) and has no path characters.


def _not_an_id(value: str) -> str:
    if value.isdigit():
        raise ValueError("a dataset name is not all digits (digits name a dataset's id)")
    return value


DatasetName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$"),
    AfterValidator(_not_an_id),
]
SplitName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
Column = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# Chosen by the client (a random token) to follow its import: GET /datasets/imports/{id}.
ProgressId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}$")]


class DatasetImport(BaseModel):
    """Import from a file or folder the operator allows (TREEGRPO_MODEL_ROOTS), or from the
    local Hugging Face cache by id. Uploads go to POST /datasets/upload."""

    model_config = ConfigDict(extra="forbid")

    name: DatasetName = Field(description="What configs call it: prompts: {dataset: NAME}.")
    path: str | None = Field(
        default=None,
        max_length=1024,
        description="A .txt/.jsonl/.csv/.parquet file (one split) or a dataset folder "
        "(train.txt, test_metadata.jsonl, data/train-*.parquet, ...).",
    )
    hub: str | None = Field(
        default=None,
        max_length=200,
        description="ORG/NAME[@REVISION] of a dataset in the local Hugging Face cache.",
    )
    split: SplitName = Field(default="train", description="The split a single file becomes.")
    prompt_column: Column = Field(default="prompt", description="The column holding prompts.")
    progress_id: ProgressId | None = Field(
        default=None,
        description="A token of the client's choosing: GET /datasets/imports/{progress_id} "
        "tells how far this import got while the request runs.",
    )


class ImportProgressPublic(BaseModel):
    phase: str = Field(
        description="starting, reading (the source, checked) or storing (into the store)."
    )
    done: int = Field(description="Bytes done in this phase.")
    total: int = Field(description="Bytes of this phase in all.")


class DatasetPublic(BaseModel):
    id: int
    name: str
    sha256: str = Field(description="The content hash: jobs pin it at submit.")
    rows: int
    bytes: int = Field(description="Bytes of its Parquet files in the store.")
    splits: dict[str, int] = Field(description="Rows per split.")
    columns: list[str] = Field(description="Metadata columns (every column but the prompt).")
    source: dict[str, Any] = Field(description="Where it came from: file, folder or hf (commit).")
    created_at: datetime
    owner_key_id: int | None
    used_by: list[int] = Field(default_factory=list, description="Jobs that read it.")


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int


class DatasetRow(BaseModel):
    row: int = Field(description="1-based row of the split.")
    prompt: str
    metadata: dict[str, Any]


class DatasetRows(BaseModel):
    split: str
    data: list[DatasetRow]
    count: int = Field(description="Rows of the split matching the search (all without one).")
