"""An HTTP/3 client on aioquic (PyPI), for tests/http3.rs: another QUIC and
HTTP/3 implementation than the one drawbridge serves with.

    python3 h3client.py ADDRESS PORT SERVER_NAME CA_FILE < requests.json

stdin holds a JSON list of requests: {"method", "authority", "path",
"headers": [[name, value], ...], "body_len": n} (a body of n bytes of 7).
stdout is one JSON object: {"handshake": "ok"} and "answers", one per
request in order: {"status", "headers", "body_len", "body"} (the body's
first 4 KiB as text), or {"error": "..."} when the stream was reset or no
answer came. A refused handshake gives {"handshake": "<why>"} and no
answers. Exit status 0 either way: the test judges.
"""

import asyncio
import json
import ssl
import sys

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset

ANSWER_WITHIN = 10


class Client(QuicConnectionProtocol):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.http = H3Connection(self._quic)
        self.answers = {}
        self.waiting = {}

    def request(self, method, authority, path, headers, body):
        stream = self._quic.get_next_available_stream_id()
        head = [
            (b":method", method.encode()),
            (b":scheme", b"https"),
            (b":authority", authority.encode()),
            (b":path", path.encode()),
        ] + [(k.encode(), v.encode()) for k, v in headers]
        self.http.send_headers(stream, head, end_stream=not body)
        if body:
            self.http.send_data(stream, body, end_stream=True)
        self.answers[stream] = {"headers": [], "body": bytearray()}
        done = asyncio.get_running_loop().create_future()
        self.waiting[stream] = done
        self.transmit()
        return stream, done

    def finish(self, stream, error=None):
        done = self.waiting.pop(stream, None)
        if done is not None and not done.done():
            done.set_result(error)

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            self.finish(event.stream_id, f"stream reset, code {event.error_code}")
        elif isinstance(event, ConnectionTerminated):
            for stream in list(self.waiting):
                self.finish(stream, f"connection closed: {event.reason_phrase}")
        for http in self.http.handle_event(event):
            answer = self.answers.get(getattr(http, "stream_id", None))
            if answer is None:
                continue
            if isinstance(http, HeadersReceived):
                answer["headers"] += [(k.decode(), v.decode()) for k, v in http.headers]
            elif isinstance(http, DataReceived):
                answer["body"] += http.data
            if getattr(http, "stream_ended", False):
                self.finish(http.stream_id)


async def main():
    address, port, server_name, ca_file = sys.argv[1:5]
    requests = json.load(sys.stdin)
    config = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN)
    config.server_name = server_name
    config.verify_mode = ssl.CERT_REQUIRED
    config.load_verify_locations(ca_file)
    out = {"answers": []}
    try:
        async with connect(
            address, int(port), configuration=config, create_protocol=Client,
            wait_connected=True,
        ) as client:
            out["handshake"] = "ok"
            for r in requests:
                body = b"\x07" * r.get("body_len", 0)
                stream, done = client.request(
                    r.get("method", "GET"), r["authority"], r["path"],
                    r.get("headers", []), body,
                )
                try:
                    error = await asyncio.wait_for(done, ANSWER_WITHIN)
                except asyncio.TimeoutError:
                    error = "no answer"
                answer = client.answers[stream]
                headers = answer["headers"]
                status = next((v for k, v in headers if k == ":status"), None)
                if error or status is None:
                    out["answers"].append({"error": error or "no status"})
                    continue
                out["answers"].append({
                    "status": int(status),
                    "headers": [[k, v] for k, v in headers if not k.startswith(":")],
                    "body_len": len(answer["body"]),
                    "body": answer["body"][:4096].decode("utf-8", "replace"),
                })
    except (ConnectionError, asyncio.TimeoutError, OSError) as e:
        out["handshake"] = f"{type(e).__name__}: {e}"
    print(json.dumps(out))


asyncio.run(asyncio.wait_for(main(), 60))
