"""The Datasets tab's calls to /api/v1/datasets, on the dashboard's ApiClient (frontend/client.py:
its `_json`, `_request` and error classes), kept here so the tab needs nothing new there."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from frontend.client import ApiClient, ApiError, KeyRequired, _error_from_response

UPLOAD_TIMEOUT = 1800.0  # a million rows are validated, hashed and written while the call waits


def list_datasets(client: ApiClient) -> list[dict[str, Any]]:
    return ApiClient._data(client._json("GET", "/datasets", params={"limit": 500}))


def dataset_rows(
    client: ApiClient, dataset_id: int, *, split: str | None, query: str, limit: int = 20
) -> dict[str, Any]:
    params: dict[str, Any] = {"q": query, "limit": limit}
    if split:
        params["split"] = split
    page: dict[str, Any] = client._json("GET", f"/datasets/{dataset_id}/rows", params=params)
    return page


def delete_dataset(client: ApiClient, dataset_id: int) -> None:
    client._request("DELETE", f"/datasets/{dataset_id}", mutating=True)


def import_progress(client: ApiClient, progress_id: str) -> dict[str, Any] | None:
    """{phase, done, total} of an import still running under `progress_id`, else None (not
    started, ended, or running in another API process)."""
    try:
        item: dict[str, Any] = client._json("GET", f"/datasets/imports/{progress_id}")
    except ApiError:
        return None
    return item


def upload_dataset(
    client: ApiClient,
    path: Path,
    *,
    name: str,
    filename: str,
    split: str,
    progress_id: str | None = None,
) -> dict[str, Any]:
    """POST /datasets/upload with the file as the body, streamed from disk; with `progress_id`
    the import can be followed at import_progress while this waits."""
    if not client.api_key:
        raise KeyRequired("Paste your API key to upload a dataset.", status=401)
    params = {"name": name, "filename": filename, "split": split}
    if progress_id is not None:
        params["progress_id"] = progress_id
    with path.open("rb") as handle:
        try:
            response = client._http.request(
                "POST",
                client.url("/datasets/upload"),
                params=params,
                content=handle,
                headers=client._headers(),
                timeout=UPLOAD_TIMEOUT,
            )
        except Exception as exc:
            raise ApiError(f"The upload did not reach the API ({exc})", status=0) from exc
    if response.status_code >= 400:
        raise _error_from_response(response)
    answer: dict[str, Any] = response.json()
    return answer
