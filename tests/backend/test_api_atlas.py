"""A tree's thumbnail atlas and its drawn nodes through the API, with a folder store and a
bucket (moto's S3 server on loopback): the atlas a worker wrote is served as it is; a tree
logged before atlases is built once and stored; ETag, 304 and the long cache under ?v=;
reads closed need the key; GET /trees/{id}?drawn=true leaves the ODE-chain states out."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import api_testing as at
import pytest
from fastapi.testclient import TestClient
from moto_s3 import AWS_ENV, make_bucket
from PIL import Image

from backend import crud, migrate
from backend.api import create_app
from backend.artifact_store import ArtifactStore, LocalStore
from backend.db import session_scope
from backend.s3_store import S3Store
from backend.settings import Settings
from treegrpo.atlas import build_atlas

FOLDER = "jobs/1/trees/epoch-000001/tree-00"
# node_index: (parent_index, step, has a log-prob, children): 1 and 6 are ODE-chain states.
SHAPE = {
    0: (None, 0, False),
    1: (0, 1, False),
    2: (1, 2, False),
    3: (2, 3, True),
    4: (2, 3, True),
    5: (3, 4, False),
    6: (4, 4, False),
    7: (6, 5, False),
}
DRAWN = {0, 2, 3, 4, 5, 7}


def colour(index: int) -> tuple[int, int, int]:
    return (30 * index % 256, 255 - 25 * index, (90 + 40 * index) % 256)


def png(index: int, size: int = 128) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), colour(index)).save(out, format="PNG")
    return out.getvalue()


def node_rows(folder: str) -> list[dict[str, Any]]:
    leaves = {5, 7}
    return [
        {
            "node_index": i,
            "parent_index": parent,
            "depth": step,
            "step_index": step,
            "t": 1 - step / 6,
            "sigma": 1 - step / 6,
            "is_leaf": i in leaves,
            "log_prob_old": -1.0 if sde else None,
            "reward": 0.1 * i if i in leaves else None,
            "advantage": 0.2 if sde else None,
            "image_path": f"{folder}/images/node-{i:05d}.png",
        }
        for i, (parent, step, sde) in SHAPE.items()
    ]


def seed(url: str, store: ArtifactStore, tmp: Path, *, with_atlas: bool) -> int:
    """A job and its tree: node images in the store (and the worker's atlas when asked)."""
    for i in SHAPE:
        put(store, f"{FOLDER}/images/node-{i:05d}.png", png(i), tmp)
    if with_atlas:  # what treegrpo.artifacts.write_atlas leaves beside the images
        image, index = build_atlas([(i, Image.open(io.BytesIO(png(i)))) for i in sorted(DRAWN)])
        put(store, f"{FOLDER}/atlas.jpg", image, tmp)
        put(store, f"{FOLDER}/atlas.json", at_json({**index, "image": "atlas.jpg"}), tmp)
    job = at.new_job(url)
    with session_scope(url) as session:
        tree = crud.add_tree(
            session,
            job_id=job.id,
            epoch=1,
            index=0,
            prompt="a red fox",
            seed=1,
            window_start=2,
            k=2,
            depth=1,
            steps=6,
            backup="mean",
            nodes=node_rows(FOLDER),
            artifact_dir=FOLDER,
        )
        return tree.id


def at_json(value: dict[str, Any]) -> bytes:
    import json

    return json.dumps(value).encode()


def put(store: ArtifactStore, key: str, data: bytes, tmp: Path) -> None:
    path = tmp / "upload.bin"
    path.write_bytes(data)
    store.put_file(key, path)


@pytest.fixture(params=["folder", "s3"])
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Settings, ArtifactStore]:
    url = f"sqlite:///{tmp_path / 'db' / 'treegrpo.db'}"
    migrate.upgrade(url)
    if request.param == "folder":
        settings = at.make_settings(tmp_path, url)
        return settings, LocalStore(settings.resolved_artifact_dir)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    endpoint = request.getfixturevalue("endpoint")
    bucket = f"s3://{make_bucket(endpoint)}/studio"
    settings = at.make_settings(tmp_path, url, artifact_url=bucket, s3_endpoint_url=endpoint)
    return settings, S3Store(bucket, endpoint)


def tile_colour(atlas: Image.Image, index: dict[str, Any], node_id: int) -> tuple[int, ...]:
    slot, tile, columns = index["slots"][str(node_id)], index["tile"], index["columns"]
    x, y = (slot % columns) * tile + tile // 2, (slot // columns) * tile + tile // 2
    return tuple(atlas.convert("RGB").getpixel((x, y)))  # type: ignore[arg-type]


def close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return all(abs(x - y) <= 6 for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("with_atlas", [True, False], ids=["worker-atlas", "logged-before"])
def test_the_atlas_holds_each_drawn_node_once_with_etag_and_long_cache(
    stack: tuple[Settings, ArtifactStore], tmp_path: Path, with_atlas: bool
) -> None:
    settings, store = stack
    url = settings.resolved_database_url
    tree_id = seed(url, store, tmp_path, with_atlas=with_atlas)
    with TestClient(create_app(settings)) as client:
        tree = client.get(f"/api/v1/trees/{tree_id}").json()
        id_of = {n["node_index"]: n["id"] for n in tree["nodes"]}
        index = client.get(f"/api/v1/trees/{tree_id}/atlas/index")
        assert index.status_code == 200, index.text
        body = index.json()
        assert body["format"] == "jpeg" and body["tile"] == 48
        assert set(body["slots"]) == {str(id_of[i]) for i in DRAWN}  # chain states left out
        if not with_atlas:  # built from the node images and stored for the next request
            assert store.size(f"{FOLDER}/atlas.json") is not None
            assert store.size(f"{FOLDER}/atlas.jpg") is not None
        image = client.get(f"/api/v1/trees/{tree_id}/atlas")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.headers["cache-control"] == "private, no-cache"
        assert image.headers["etag"].strip('"') == body["etag"]
        atlas = Image.open(io.BytesIO(image.content))
        assert atlas.size == (body["width"], body["height"])
        for i in DRAWN:
            assert close(tile_colour(atlas, body, id_of[i]), colour(i)), i
        again = client.get(
            f"/api/v1/trees/{tree_id}/atlas", headers={"If-None-Match": image.headers["etag"]}
        )
        assert again.status_code == 304 and again.content == b""
        fixed = client.get(f"/api/v1/trees/{tree_id}/atlas", params={"v": body["etag"]})
        assert fixed.headers["cache-control"] == "private, max-age=31536000, immutable"
        stale = client.get(f"/api/v1/trees/{tree_id}/atlas", params={"v": "old"})
        assert stale.headers["cache-control"] == "private, no-cache"
        index_again = client.get(
            f"/api/v1/trees/{tree_id}/atlas/index", headers={"If-None-Match": index.headers["etag"]}
        )
        assert index_again.status_code == 304


def test_drawn_nodes_only_join_each_node_to_its_nearest_drawn_ancestor(
    stack: tuple[Settings, ArtifactStore], tmp_path: Path
) -> None:
    settings, store = stack
    tree_id = seed(settings.resolved_database_url, store, tmp_path, with_atlas=False)
    with TestClient(create_app(settings)) as client:
        whole = client.get(f"/api/v1/trees/{tree_id}")
        drawn = client.get(f"/api/v1/trees/{tree_id}", params={"drawn": "true"})
    assert whole.headers["etag"] != drawn.headers["etag"]
    by_index = {n["node_index"]: n for n in whole.json()["nodes"]}
    got = {n["node_index"]: n for n in drawn.json()["nodes"]}
    assert set(got) == DRAWN
    # 2 hangs under the root (1 was a chain state), 7 under 4 (6 was one).
    assert got[2]["parent_id"] == by_index[0]["id"]
    assert got[7]["parent_id"] == by_index[4]["id"]
    assert got[3]["parent_id"] == by_index[2]["id"]
    assert drawn.json()["leaves"] == whole.json()["leaves"] == 2


def test_the_tree_answer_read_as_rows_is_the_one_read_as_orm_objects(
    stack: tuple[Settings, ArtifactStore], tmp_path: Path
) -> None:
    """GET /trees reads nodes as plain rows (crud.get_tree_rows: 0.4 s to 0.05-0.09 s for a
    4,096-leaf tree) and builds only the drawn ones: field for field the answer the ORM path
    gives, whole and drawn-only (a row's `t` is the column, not SQLAlchemy's Row.t)."""
    from backend.schemas import tree_public

    settings, store = stack
    url = settings.resolved_database_url
    tree_id = seed(url, store, tmp_path, with_atlas=False)
    with session_scope(url) as session:
        tree, rows = crud.get_tree_rows(session, tree_id=tree_id)
        assert [r.id for r in rows] == sorted(r.id for r in rows) and rows[3].t == rows[3][6]
        for drawn in (False, True):
            fast = tree_public(tree, nodes=rows, drawn=drawn)
            slow = tree_public(crud.get_tree(session, tree_id=tree_id), drawn=drawn)
            assert fast.model_dump() == slow.model_dump()
            assert len(fast.nodes) == (len(DRAWN) if drawn else len(rows))


def test_a_branch_has_its_own_atlas_and_unknown_ones_are_404(
    stack: tuple[Settings, ArtifactStore], tmp_path: Path
) -> None:
    settings, store = stack
    url = settings.resolved_database_url
    tree_id = seed(url, store, tmp_path, with_atlas=True)
    branch_dir = f"{FOLDER}/branches/job-000009"
    for i in (0, 1):
        put(store, f"{branch_dir}/images/node-{i:05d}.png", png(10 + i, 64), tmp_path)
    with session_scope(url) as session:
        tree = crud.get_tree(session, tree_id=tree_id)
        origin = next(n.id for n in tree.nodes if n.node_index == 3)
        branch_job = at.new_job(url, kind="sample")
        branch = crud.create_branch(
            session, job_id=branch_job.id, tree_id=tree_id, node_id=origin, k=2
        )
        rows = [
            {
                "node_index": i,
                "parent_index": None,
                "depth": 4,
                "step_index": 4,
                "t": 0.2,
                "sigma": 0.2,
                "is_leaf": True,
                "log_prob_old": -1.0,
                "reward": 0.5,
                "advantage": None,
                "image_path": f"{branch_dir}/images/node-{i:05d}.png",
            }
            for i in (0, 1)
        ]
        crud.replace_branch_nodes(session, branch_id=branch.id, nodes=rows)
        branch_id = branch.id
    with TestClient(create_app(settings)) as client:
        index = client.get(f"/api/v1/trees/{tree_id}/atlas/index", params={"branch": branch_id})
        assert index.status_code == 200, index.text
        nodes = client.get(f"/api/v1/trees/{tree_id}").json()["branches"][0]["nodes"]
        assert set(index.json()["slots"]) == {str(n["id"]) for n in nodes}
        assert store.size(f"{branch_dir}/atlas.json") is not None
        image = client.get(f"/api/v1/trees/{tree_id}/atlas", params={"branch": branch_id})
        atlas = Image.open(io.BytesIO(image.content))
        first = next(n for n in nodes if n["node_index"] == 0)
        assert close(tile_colour(atlas, index.json(), first["id"]), colour(10))
        missing = client.get(f"/api/v1/trees/{tree_id}/atlas", params={"branch": 999})
        assert missing.status_code == 404
        assert client.get("/api/v1/trees/999/atlas").status_code == 404


def test_with_reads_closed_the_atlas_needs_a_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db' / 'treegrpo.db'}"
    migrate.upgrade(url)
    settings = at.make_settings(tmp_path, url, reads_require_key=True)
    tree_id = seed(url, LocalStore(settings.resolved_artifact_dir), tmp_path, with_atlas=True)
    with session_scope(url) as session:
        _, key = crud.create_api_key(session, name="reader", role="viewer")
    with TestClient(create_app(settings)) as client:
        for path in ("atlas", "atlas/index"):
            assert client.get(f"/api/v1/trees/{tree_id}/{path}").status_code == 401
            ok = client.get(f"/api/v1/trees/{tree_id}/{path}", headers={"X-API-Key": key})
            assert ok.status_code == 200
