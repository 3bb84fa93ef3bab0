"""A moto S3 server on 127.0.0.1 for benchmarks, reached through s3fs like a real endpoint."""

from __future__ import annotations

import logging
import os
import socket

import fsspec


def start_loopback_s3(bucket: str):
    """Start the server, point the standard AWS environment at it, create ``bucket``."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    os.environ.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{port}", AWS_ACCESS_KEY_ID="x",
                      AWS_SECRET_ACCESS_KEY="x", AWS_DEFAULT_REGION="us-east-1")
    fsspec.filesystem("s3").mkdir(bucket)
    return server
