"""What a holder of one ordinary key tries, to make the studio's worker leak what it holds or
reach what it should not (issue 23), through the real API and a real worker.

The studio here is strict as an operator would set it: jobs may connect to one reward server (a
listener on loopback that records every request it gets) and to a name `imds.test` (one that an
attacker re-pointed at the cloud metadata address), read one listed variable, and open files
under `models/` only. One secret is stored, bound to another host. The worker holds what a
compose worker holds: the database URL, the secrets key, AWS credentials.

Name resolution in the worker is stubbed (a sitecustomize on its PYTHONPATH): `*.test` names
answer from a table, and any connection beyond loopback is refused and recorded, so no packet
can leave this machine even if a check were missing. The attempts are asserted to be none.

Every attack gets a 422 naming the field, or (written straight into the database, past the
API's check) a job failure naming the rule; the listener sees only the one request it should,
another loopback service sees nothing, and no secret value is in any answer, log or file.
"""

from __future__ import annotations

import json
import socket
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workers"))
from worker_stack import DIGITS_SMALL, Stack, make_stack

from backend import crud
from backend.api import create_app
from backend.crud.secrets import set_secret
from backend.db import session_scope
from backend.queue import INTERACTIVE_QUEUE, QUEUE

pytestmark = pytest.mark.slow

JOBS = "/api/v1/jobs"
SENSITIVE_ENV = (
    "HOME",
    "PATH",
    "TREEGRPO_DATABASE_URL",
    "TREEGRPO_SECRETS_KEY",
    "TREEGRPO_DATA_DIR",
    "TREEGRPO_API_URL",
    "TREEGRPO_PORT",
    "AWS_SECRET_ACCESS_KEY",
)
SAMPLE = {**DIGITS_SMALL, "reward": "remote"}

# Loaded by every Python process of the worker (PYTHONPATH): a stub resolver and a loopback-only
# guard that records what it refused.
GUARD = textwrap.dedent(
    """
    import ipaddress, json, os, socket

    _TABLE = json.loads(os.environ["EGRESS_TEST_DNS"])
    _LOG = os.environ["EGRESS_TEST_ATTEMPTS"]
    _getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect
    _connect_ex = socket.socket.connect_ex

    def _record(what):
        with open(_LOG, "a") as log:
            log.write(repr(what) + "\\n")

    def _loopback(host):
        try:
            return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
        except ValueError:
            return host == "localhost"

    def getaddrinfo(host, port, *args, **kwargs):
        if host in _TABLE:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))
                    for address in _TABLE[host]]
        if host is None or _loopback(host):
            return _getaddrinfo(host, port, *args, **kwargs)
        _record(("lookup", host))
        raise socket.gaierror(f"test guard: no lookups beyond loopback ({host})")

    def connect(self, address):
        if isinstance(address, tuple) and not _loopback(address[0]):
            _record(("connect", address))
            raise OSError(f"test guard: no connection beyond loopback ({address})")
        return _connect(self, address)

    def connect_ex(self, address):
        if isinstance(address, tuple) and not _loopback(address[0]):
            _record(("connect", address))
            raise OSError(f"test guard: no connection beyond loopback ({address})")
        return _connect_ex(self, address)

    socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
    socket.socket.connect_ex = connect_ex
    """
)


class Listener:
    """A reward server on loopback that records every request and answers scores."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                listener.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                prompts = json.loads(body).get("prompts", [])
                answer = json.dumps({"scores": [0.5] * len(prompts)}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/score"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class Recorder:
    """A loopback TCP service that no job may reach (a Postgres, a Redis, the API itself):
    it counts the connections it accepts."""

    def __init__(self) -> None:
        self.accepted = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()


class Studio:
    def __init__(self, stack: Stack, client: TestClient, key: str, **values: Any) -> None:
        self.stack, self.client, self.key = stack, client, key
        self.secret: str = values["secret"]
        self.aws: str = values["aws"]
        self.secrets_key: str = values["secrets_key"]
        self.referable: str = values["referable"]
        self.listener: Listener = values["listener"]
        self.recorder: Recorder = values["recorder"]
        self.attempts: Path = values["attempts"]
        self.models: Path = values["models"]
        self.answers: list[str] = []

    def submit(self, config: dict[str, Any], kind: str = "train", **body: Any) -> Any:
        answer = self.client.post(
            JOBS,
            json={"kind": kind, "config": config, **body},
            headers={"X-API-Key": self.key},
        )
        self.answers.append(answer.text)
        return answer

    def refused(self, config: dict[str, Any], field: str, rule: str) -> str:
        """Submit; assert a 422 whose errors name `field` with `rule` in its message."""
        answer = self.submit(config)
        assert answer.status_code == 422, answer.text
        errors = {".".join(map(str, e["loc"][2:])): e["msg"] for e in answer.json()["detail"]}
        assert field in errors, errors
        assert rule in errors[field], errors
        return errors[field]

    def refused_as_experiment(self, config: dict[str, Any], field: str, rule: str) -> None:
        """POST /experiments with `config` as the base of a two-seed grid: the same 422 as a
        job, naming the run and the field, and no job made."""
        body = {"preset": "digits-treegrpo", "config": config, "axes": {"seed": [0, 1]}}
        answer = self.client.post(
            "/api/v1/experiments",
            json={**body, "budget": {"epochs": 1}},
            headers={"X-API-Key": self.key},
        )
        self.answers.append(answer.text)
        assert answer.status_code == 422, answer.text
        errors = {".".join(map(str, e["loc"][4:])): e["msg"] for e in answer.json()["detail"]}
        assert {tuple(e["loc"][:3]) for e in answer.json()["detail"]} == {
            ("body", "runs", "digits-treegrpo seed=0")
        }
        assert field in errors and rule in errors[field], errors

    def bypass(self, config: dict[str, Any]) -> int:
        """A sample job written straight into the database (the API's check skipped) and sent
        (to the interactive lane, whose warm process takes one job after another quickly)."""
        job_id = self.stack.create_job("sample", "digits-treegrpo", config, name="bypass")
        self.stack.send(job_id, "sample", queue=INTERACTIVE_QUEUE)
        return job_id


@pytest.fixture(scope="module")
def studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    root = tmp_path_factory.mktemp("egress")
    listener, recorder = Listener(), Recorder()
    models = root / "models"
    (models / "real").mkdir(parents=True)
    (root / "elsewhere").mkdir()
    (models / "escape").symlink_to(root / "elsewhere")
    guard = root / "guard"
    guard.mkdir()
    (guard / "sitecustomize.py").write_text(GUARD)
    attempts = root / "attempts.log"
    attempts.touch()
    values = {
        "secret": "sk-" + uuid.uuid4().hex,
        "aws": "aws-" + uuid.uuid4().hex,
        "secrets_key": "sealing-" + uuid.uuid4().hex,
        "referable": "referable-" + uuid.uuid4().hex,
    }
    with make_stack(
        "filesystem",
        root,
        secrets_key=values["secrets_key"],
        outbound_hosts=f"127.0.0.1:{listener.port},imds.test:80",
        referable_env="EGRESS_REWARD_KEY",
        model_roots=str(models),
    ) as stack:
        with session_scope(stack.url) as session:
            _, key = crud.create_api_key(session, name="attacker", role="member")
            set_secret(
                session,
                name="reward-key",
                value=values["secret"],
                hosts=["reward.internal:8100"],
                secrets_key=values["secrets_key"],
            )
        stack.consume = f"{QUEUE},{INTERACTIVE_QUEUE}"
        stack.start_worker(
            "egress",
            env={
                "PYTHONPATH": str(guard),
                "EGRESS_TEST_DNS": json.dumps({"imds.test": ["169.254.169.254"]}),
                "EGRESS_TEST_ATTEMPTS": str(attempts),
                "AWS_SECRET_ACCESS_KEY": values["aws"],
                "TREEGRPO_SECRETS_KEY": values["secrets_key"],
                "EGRESS_REWARD_KEY": values["referable"],
            },
        )
        with TestClient(create_app(stack.settings)) as client:
            yield Studio(
                stack,
                client,
                key,
                listener=listener,
                recorder=recorder,
                attempts=attempts,
                models=models,
                **values,
            )
    listener.server.shutdown()
    recorder.sock.close()


def remote(url: str, **options: Any) -> dict[str, Any]:
    return {**SAMPLE, "reward_options": {"remote": {"url": url, **options}}}


def test_refused_at_submit_naming_the_field(studio: Studio) -> None:
    field = "reward_options.remote"
    url = studio.listener.url
    # An env reference to each variable the worker holds.
    for name in SENSITIVE_ENV:
        studio.refused(remote(url, api_key_env=name), f"{field}.api_key_env", "secret rule")
    # The stored secret, to a host it is not bound to (the listener is an allowed host).
    studio.refused(
        remote(url, api_key_secret="reward-key"), f"{field}.api_key_secret", "reward.internal"
    )
    # The metadata address, directly and as a reward's server.
    studio.refused(remote("http://169.254.169.254/latest/meta-data/"), f"{field}.url", "metadata")
    server = {
        **DIGITS_SMALL,
        "reward_options": {"digit_judge": {"server": "http://169.254.169.254/"}},
    }
    studio.refused(server, "reward_options.digit_judge.server", "metadata")
    # Loopback service ports: a service here, Postgres, Redis.
    for port in (studio.recorder.port, 5432, 6379):
        studio.refused(remote(f"http://127.0.0.1:{port}/"), f"{field}.url", "outbound rule")
    for bad in ("ftp://127.0.0.1/", f"file:///{studio.models}"):
        studio.refused(remote(bad), f"{field}.url", "only http:// and https://")
    # MLflow: local stores of the worker and a foreign server.
    for uri in (f"file://{studio.models}/mlruns", "sqlite:////tmp/mlflow.db"):
        studio.refused({"tracking.mlflow_uri": uri}, "tracking.mlflow_uri", "never to a file")
    studio.refused(
        {"tracking.mlflow_uri": "http://evil.example:5000"},
        "tracking.mlflow_uri",
        "not a host the operator lets jobs connect to",
    )
    # Paths: `..`, absolute, a symlink out of the root; one message, whether they exist or not.
    messages = {
        studio.refused({"model": value}, "model", "file rule")
        for value in (
            "../../../../etc",
            "/etc",
            "/no/such/folder",
            str(studio.models / "escape"),
            str(studio.models / "real" / ".." / ".." / "elsewhere"),
        )
    }
    assert len(messages) == 1
    for path in ("/etc", "../../../etc", str(studio.models / "escape")):
        clip = {"reward": "clipscore", "reward_options": {"clipscore": {"path": path}}}
        studio.refused(clip, "reward_options.clipscore.path", "file rule")
    head = {"reward": "aesthetic", "reward_options": {"aesthetic": {"head": "../../etc/passwd"}}}
    studio.refused(head, "reward_options.aesthetic.head", "file rule")
    # A prompt file: the config takes prompt sets and lists today; a path is refused either way.
    answer = studio.submit({"prompts": "/etc/passwd"})
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"][-1] == "prompts"
    # A size the digits model rules out.
    studio.refused({"sampling.height": 500}, "sampling.height", "16x16 only")
    with session_scope(studio.stack.url) as session:
        assert crud.list_jobs(session)[1] == 0  # nothing refused was stored


def test_an_experiment_is_refused_like_a_job(studio: Studio) -> None:
    """Every run of a grid passes the submit checks a job passes (the route once skipped them)."""
    field = "reward_options.remote"
    url = studio.listener.url
    for name in ("TREEGRPO_SECRETS_KEY", "AWS_SECRET_ACCESS_KEY"):
        studio.refused_as_experiment(
            remote(url, api_key_env=name), f"{field}.api_key_env", "secret rule"
        )
    studio.refused_as_experiment(
        remote(url, api_key_secret="reward-key"), f"{field}.api_key_secret", "reward.internal"
    )
    metadata = remote("http://169.254.169.254/latest/meta-data/")
    studio.refused_as_experiment(metadata, f"{field}.url", "metadata")
    studio.refused_as_experiment(
        remote(f"http://127.0.0.1:{studio.recorder.port}/"), f"{field}.url", "outbound rule"
    )
    studio.refused_as_experiment(
        {"tracking.mlflow_uri": f"file://{studio.models}/mlruns"},
        "tracking.mlflow_uri",
        "never to a file",
    )
    for value in ("/etc", "../../../../etc", str(studio.models / "escape")):
        studio.refused_as_experiment({"model": value}, "model", "file rule")
    studio.refused_as_experiment({"sampling.height": 500}, "sampling.height", "16x16 only")
    with session_scope(studio.stack.url) as session:
        assert crud.list_jobs(session)[1] == 0
        assert crud.list_experiments(session, limit=10, offset=0)[1] == 0


def test_the_worker_refuses_on_its_own_and_only_the_allowed_request_arrives(
    studio: Studio,
) -> None:
    stack, url = studio.stack, studio.listener.url
    # Past the API's check: straight into the database, then to the worker.
    refused = {
        "env": studio.bypass(remote(url, api_key_env="TREEGRPO_SECRETS_KEY")),
        "aws": studio.bypass(remote(url, api_key_env="AWS_SECRET_ACCESS_KEY")),
        "secret": studio.bypass(remote(url, api_key_secret="reward-key")),
        "service port": studio.bypass(remote(f"http://127.0.0.1:{studio.recorder.port}/")),
        "metadata": studio.bypass(remote("http://169.254.169.254/latest/meta-data/")),
        "mlflow file": studio.bypass({"tracking.mlflow_uri": f"file://{studio.models}/x"}),
        "mlflow sqlite": studio.bypass({"tracking.mlflow_uri": "sqlite:////tmp/mlflow.db"}),
        "mlflow foreign": studio.bypass({"tracking.mlflow_uri": "http://evil.example:5000"}),
        "reward path": studio.bypass(
            {"reward": "clipscore", "reward_options.clipscore.path": str(studio.models / "escape")}
        ),
        "model /etc": studio.bypass({"model": "/etc"}),
        "model missing": studio.bypass({"model": "/no/such/folder"}),
    }
    # Through the API: an allowed name that resolves to the metadata address (found only in
    # the worker, right before connecting), and the one request that may go out.
    imds = studio.submit(remote("http://imds.test/score"), kind="sample")
    allowed = studio.submit(remote(url, api_key_env="EGRESS_REWARD_KEY"), kind="sample")
    assert imds.status_code == 201 and allowed.status_code == 201, (imds.text, allowed.text)

    errors = {
        what: stack.wait_status(job_id, ("failed", "succeeded"), timeout=120)
        for what, job_id in refused.items()
    }
    for what, job in errors.items():
        assert job["status"] == "failed", (what, job)
    expected = {
        "env": "secret rule: TREEGRPO_SECRETS_KEY is not a variable the operator lets jobs read",
        "aws": "secret rule: AWS_SECRET_ACCESS_KEY is not a variable",
        "secret": "secret rule: secret 'reward-key' may be sent only to reward.internal:8100",
        "service port": "outbound rule",
        "metadata": "169.254.169.254 is a cloud metadata address",
        "mlflow file": "never to a file",
        "mlflow sqlite": "never to a file",
        "mlflow foreign": "evil.example:5000 is not a host the operator lets jobs connect to",
        "reward path": "reward_options.clipscore.path: file rule",
        "model /etc": "model: file rule",
        "model missing": "model: file rule",
    }
    for what, text in expected.items():
        assert text in errors[what]["error"], (what, errors[what]["error"])
    # Whether /etc exists or not, the worker's answer is the same.
    assert errors["model /etc"]["error"] == errors["model missing"]["error"]

    imds_job = stack.wait_status(imds.json()["id"], ("failed", "succeeded"), timeout=240)
    assert imds_job["status"] == "failed"
    assert "imds.test resolves to 169.254.169.254 is a cloud metadata address" in imds_job["error"]
    allowed_job = stack.wait_status(allowed.json()["id"], ("failed", "succeeded"), timeout=240)
    assert allowed_job["status"] == "succeeded", stack.explain(allowed.json()["id"])()

    # The listener got the allowed job's requests, with the listed variable's value, and no
    # other; the other loopback service got nothing; nothing tried to leave loopback.
    assert studio.listener.requests
    bearers = {r["headers"].get("Authorization") for r in studio.listener.requests}
    assert bearers == {f"Bearer {studio.referable}"}
    assert studio.recorder.accepted == 0
    assert studio.attempts.read_text() == ""

    # No secret value in any answer, job log, worker output or file of the studio.
    job_ids = [*refused.values(), imds.json()["id"], allowed.json()["id"]]
    headers = {"X-API-Key": studio.key}
    for job_id in job_ids:
        for path in (f"{JOBS}/{job_id}", f"{JOBS}/{job_id}/logs"):
            studio.answers.append(studio.client.get(path, headers=headers).text)
    values = [studio.secret, studio.aws, studio.secrets_key, studio.referable]
    assert [v for v in values if any(v in text for text in studio.answers)] == []
    files = [path for path in stack.root.rglob("*") if path.is_file()]
    leaked = [
        (str(path), value)
        for path in files
        for value in values
        if value.encode() in path.read_bytes()
    ]
    assert leaked == []
