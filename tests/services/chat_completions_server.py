"""A small OpenAI-compatible chat-completions server for the served VLM backend's tests (no real VLM runs here).

    python chat_completions_server.py --port P --model M --api-key K [--delay-s S] [--die-after N] [--log FILE]

GET /v1/models lists M; POST /v1/chat/completions checks the bearer key, the model, and that every image_url is a
PNG data URL that decodes, then answers from judge_answers.POINTWISE by the caption in 'Text Caption: [...]'
(pairwise questions: the brighter image is better). A caption containing 'slow' waits S seconds first. After N answered
requests the process exits at the next one without answering (a server dying mid-batch). Each request is logged
as one JSON line (the images' sizes, the text).
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from judge_answers import POINTWISE
from PIL import Image

CAPTION = re.compile(r"Text Caption: \[(.*)\]", re.DOTALL)


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.answered = 0
        self.lock = threading.Lock()


def decode_image(url: str) -> Image.Image:
    """The image of a PNG data URL; ValueError for anything else."""
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        raise ValueError(f"image_url is not a PNG data URL: {url[:40]!r}")
    image = Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :], validate=True)))
    if image.format != "PNG":
        raise ValueError(f"image is {image.format}, expected PNG")
    image.load()
    return image


def answer_for(text: str, images: list[Image.Image]) -> str:
    if "two generated images" in text:  # pairwise: the brighter image wins
        first, second = (float(sum(image.convert("L").getdata())) for image in images)
        return (
            "Image 1 is better."
            if first > second
            else "Image 2 is better."
            if second > first
            else "Both images are equally good."
        )
    match = CAPTION.search(text)
    caption = match.group(1) if match else ""
    return POINTWISE.get(caption, ("Final Score: 3", 3.0))[0]


class Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, format: str, *args: Any) -> None:  # keep the test output quiet
        pass

    def reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def authorized(self) -> bool:
        if self.headers.get("Authorization") != f"Bearer {self.state.args.api_key}":
            self.reply(401, {"error": {"message": "invalid api key"}})
            return False
        return True

    def do_GET(self) -> None:
        if self.path != "/v1/models":
            self.reply(404, {"error": {"message": self.path}})
        elif self.authorized():
            self.reply(200, {"object": "list", "data": [{"id": self.state.args.model, "object": "model"}]})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path != "/v1/chat/completions":
            self.reply(404, {"error": {"message": self.path}})
            return
        if not self.authorized():
            return
        with self.state.lock:
            if self.state.args.die_after is not None and self.state.answered >= self.state.args.die_after:
                os._exit(1)  # mid-batch: the connection drops with no answer
            self.state.answered += 1
        try:
            self.answer(body)
        except (ValueError, KeyError, TypeError) as exc:
            self.reply(400, {"error": {"message": f"{type(exc).__name__}: {exc}"}})

    def answer(self, body: dict[str, Any]) -> None:
        if body["model"] != self.state.args.model:
            raise ValueError(f"model {body['model']!r} is not served")
        parts = body["messages"][0]["content"]
        images = [decode_image(p["image_url"]["url"]) for p in parts if p["type"] == "image_url"]
        sizes = [image.size for image in images]
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        if self.state.args.log:
            with open(self.state.args.log, "a") as log:
                log.write(json.dumps({"sizes": sizes, "text": text, "temperature": body.get("temperature")}) + "\n")
        if "slow" in text:
            time.sleep(self.state.args.delay_s)
        content = answer_for(text, images)
        self.reply(
            200,
            {
                "object": "chat.completion",
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
            },
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--delay-s", type=float, default=0.0)
    parser.add_argument("--die-after", type=int, default=None)
    parser.add_argument("--log", default=None)
    args = parser.parse_args()
    Handler.state = State(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
