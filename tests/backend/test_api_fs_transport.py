"""The filesystem broker never shows a consumer a half-written message."""

from __future__ import annotations

import threading
from pathlib import Path

from kombu import Connection

from backend.fs_transport import Transport

MESSAGES = 300


def test_a_polling_consumer_gets_every_message_whole_while_a_producer_writes(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "queue"
    folder.mkdir()
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder)}
    producer = Connection("filesystem://", transport=Transport, transport_options=options)
    consumer = Connection("filesystem://", transport=Transport, transport_options=options)
    put_channel, get_channel = producer.channel(), consumer.channel()
    big = "x" * 200_000  # large enough that a write is not one instant

    def produce() -> None:
        for index in range(MESSAGES):
            put_channel._put("jobs", {"index": index, "pad": big})

    thread = threading.Thread(target=produce)
    thread.start()
    received: list[int] = []
    while len(received) < MESSAGES:
        try:
            message = get_channel._get("jobs")
        except Exception as exc:  # kombu's Empty when nothing is there yet
            if type(exc).__name__ != "Empty":
                raise
            continue
        assert message["pad"] == big
        received.append(message["index"])
    thread.join()
    assert sorted(received) == list(range(MESSAGES))
    assert list(folder.iterdir()) == []  # no partial file left behind
