"""`treegrpo reward-serve`: any registered reward (or a weighted set) behind HTTP, on its own device.

A separate top-level package because it is web code (FastAPI, uvicorn) on top of the core's
reward registry: the core (`treegrpo/`) imports no web code, and the API process (`backend/`)
never imports torch, so neither may import this package. It speaks the protocol of the core's
`remote` reward client (treegrpo/rewards/remote.py).

    treegrpo reward-serve --reward digit_judge --port 8100
    python -m rewardserve --reward pickscore --option path=ORG/NAME --device cuda:1 --port 8100
"""
