#!/usr/bin/env python3
"""A pixmill worker for a custom op, in Python: `posterize` (Pillow's ImageOps.posterize).

A template to copy. A gateway registers the op (PIXMILL_OPS_FILE) and declares its queue,
<prefix>.op.posterize. This worker takes jobs from that queue, runs its own steps from the
job's cursor on, then either stores the result and replies to the gateway, or stores the
image as it stands and forwards the job to the owner of the next step.

Environment:
  PIXMILL_AMQP_URL      broker URL (default amqp://guest:guest@127.0.0.1:5672/%2f)
  PIXMILL_QUEUE_PREFIX  topology prefix (default pixmill)
  PIXMILL_BLOB_URL      file://PATH (a folder) or s3://BUCKET[/PREFIX]
                        (default file://$PIXMILL_DATA_DIR/blobs, PIXMILL_DATA_DIR default var/data)
  AWS_ENDPOINT_URL      for s3://: the S3-compatible endpoint (http:// is fine), with
  AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION (default us-east-1)
  PIXMILL_WORKER_NAME   name in replies and hops (default python-<hostname>-<pid>)
"""
import io
import json
import os
import signal
import socket
import sys
import tempfile
import time
import uuid

import boto3
import botocore.config
import botocore.exceptions
import pika
from pika.exceptions import (AMQPChannelError, AMQPConnectionError, ChannelClosedByBroker, NackError,
                             UnroutableError)
from PIL import Image, ImageOps, UnidentifiedImageError


def posterize(img, params):
    bits = params.get("bits")
    if type(bits) is not int or not 1 <= bits <= 8:  # type(): True is not a bit count
        raise Failed("invalid_step", f"posterize: bits must be an integer 1..8, not {bits!r}")
    if img.mode in ("RGBA", "LA"):  # posterize the colours, keep the alpha channel as it is
        alpha = img.getchannel("A")
        out = ImageOps.posterize(img.convert(img.mode[:-1]), bits)
        out.putalpha(alpha)
        return out
    if img.mode not in ("L", "RGB"):  # palette, 16-bit, CMYK...: to a mode posterize takes
        return posterize(img.convert("RGBA" if img.has_transparency_data else "RGB"), params)
    return ImageOps.posterize(img, bits)


# The ops this worker serves: name -> function(image, params) -> image. Each one needs a
# queue <prefix>.op.<name>, which a gateway declares once its PIXMILL_OPS_FILE registers it.
OPS = {"posterize": posterize}

URL = os.environ.get("PIXMILL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PREFIX = os.environ.get("PIXMILL_QUEUE_PREFIX", "pixmill")
DATA_DIR = os.environ.get("PIXMILL_DATA_DIR", "var/data")
BLOB_URL = os.environ.get("PIXMILL_BLOB_URL", f"file://{DATA_DIR}/blobs")
NAME = os.environ.get("PIXMILL_WORKER_NAME", f"python-{socket.gethostname()}-{os.getpid()}")
CONTRACT = "1.1"
BUILTIN = {"resize", "crop", "blur", "edges", "swap", "grayscale", "rotate", "flip"}
FORMATS = {"jpeg": ("jpg", "image/jpeg"), "png": ("png", "image/png"), "webp": ("webp", "image/webp")}

stopping = False


class Failed(Exception):
    """A job that cannot succeed: answered with a `failed` reply, then acked."""

    def __init__(self, code, message):
        super().__init__(message)
        self.code = code


class Transient(Exception):
    """Try again later: the delivery goes back to the queue, never acked."""


class FolderStore:
    def __init__(self, root):
        self.root = root

    def path(self, key):
        if key.startswith("/") or ".." in key.split("/"):
            raise Failed("invalid_request", f"blob key {key!r} leaves the store")
        return os.path.join(self.root, key)

    def get(self, key):  # bytes, or None when there is no such blob
        try:
            with open(self.path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            raise Transient(f"blob store: {err}") from err

    def put(self, key, data):
        # Write a temp file, fsync it, rename it into place: a reader never sees half a file.
        try:
            tmp_dir, final = os.path.join(self.root, "tmp"), self.path(key)
            os.makedirs(tmp_dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=tmp_dir)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.makedirs(os.path.dirname(final), exist_ok=True)
            os.replace(tmp, final)
            dir_fd = os.open(os.path.dirname(final), os.O_RDONLY)
            try:
                os.fsync(dir_fd)  # makes the rename itself durable
            finally:
                os.close(dir_fd)
        except OSError as err:
            raise Transient(f"blob store: {err}") from err


class S3Store:
    def __init__(self, bucket, prefix):
        self.bucket, self.prefix = bucket, prefix
        self.s3 = boto3.client(
            "s3",
            endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None,
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
            config=botocore.config.Config(s3={"addressing_style": "path"}, connect_timeout=5,
                                          read_timeout=30, retries={"max_attempts": 3}),
        )

    def get(self, key):
        try:
            reply = self.s3.get_object(Bucket=self.bucket, Key=self.prefix + key)
            return reply["Body"].read()
        except botocore.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise Transient(f"blob store: {err}") from err
        except botocore.exceptions.BotoCoreError as err:  # connection errors and the like
            raise Transient(f"blob store: {err}") from err

    def put(self, key, data):
        try:
            self.s3.put_object(Bucket=self.bucket, Key=self.prefix + key, Body=data)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as err:
            raise Transient(f"blob store: {err}") from err


def open_store(url):
    if url.startswith("file://"):
        return FolderStore(url[len("file://"):])
    if url.startswith("s3://"):
        bucket, _, prefix = url[len("s3://"):].partition("/")
        prefix = prefix.strip("/")
        return S3Store(bucket, f"{prefix}/" if prefix else "")
    sys.exit(f"python-worker: PIXMILL_BLOB_URL must be file://PATH or s3://BUCKET[/PREFIX], not {url}")


def text(value):  # header values arrive as str, or as bytes when not valid UTF-8
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def number(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def parse(body):
    """The job request, checked just enough to run it safely."""
    try:
        job = json.loads(body)
    except ValueError as err:
        raise Failed("invalid_request", f"the body is not JSON: {err}") from err
    if isinstance(job, dict):
        job.setdefault("cursor", 0)  # both absent on a job as the gateway first publishes it
        job.setdefault("hops", [])
    ok = (isinstance(job, dict) and isinstance(job.get("id"), str) and isinstance(job.get("input"), str)
          and isinstance(job.get("steps"), list) and job["steps"]
          and all(isinstance(s, dict) and isinstance(s.get("op"), str) for s in job["steps"])
          and job.get("format") in FORMATS and type(job.get("quality")) is int
          and type(job["cursor"]) is int and isinstance(job["hops"], list))
    if not ok:
        raise Failed("invalid_request", "the body is not a job request (id, input, steps, format, quality)")
    try:
        uuid.UUID(job["id"])
    except ValueError as err:
        raise Failed("invalid_request", f"the job id {job['id']!r} is not a UUID") from err
    if not valid_key(job["input"]):
        raise Failed("invalid_request", f"the input key {job['input']!r} is not a blob key")
    if not 0 <= job["cursor"] < len(job["steps"]):
        raise Failed("invalid_request", f"cursor {job['cursor']} is outside steps 0..{len(job['steps']) - 1}")
    return job


def valid_key(key):
    """Blob keys as the contract spells them: `/`-separated parts of letters, digits, -, _ and ."""
    return (0 < len(key) <= 200 and all(part not in ("", ".", "..") for part in key.split("/"))
            and all(c.isascii() and (c.isalnum() or c in "-_./") for c in key))


def owner_queue(op):
    return f"{PREFIX}.jobs" if op in BUILTIN else f"{PREFIX}.op.{op}"


def encode(img, fmt, quality, fast=False):
    out = io.BytesIO()
    try:
        if fmt == "jpeg":
            img.convert("L" if img.mode == "L" else "RGB").save(out, "JPEG", quality=quality)
        elif fmt == "webp":
            has_alpha = img.has_transparency_data
            img.convert("RGBA" if has_alpha else "RGB").save(out, "WEBP", quality=quality)
        else:  # fast: an image that only goes to the next worker
            img.save(out, "PNG", compress_level=1 if fast else 6)
    except (OSError, ValueError) as err:
        raise Failed("encode_failed", f"cannot encode {fmt}: {err}") from err
    return out.getvalue()


def run(job, store):
    """Runs this worker's steps. Returns (to, message, outcome for the log), where `to` is
    the next owner's queue for a forward, or None for a reply."""
    cursor, steps = job["cursor"], job["steps"]
    if steps[cursor]["op"] not in OPS:  # not ours at all: pass it on untouched
        queue = owner_queue(steps[cursor]["op"])
        return queue, job, f"passed to {queue}"
    started = time.monotonic()
    data = store.get(job["input"])
    if data is None:
        raise Failed("input_missing", f"input {job['input']} is not in the blob store")
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        why = "not an image format Pillow reads" if isinstance(err, UnidentifiedImageError) else err
        raise Failed("undecodable_image", f"cannot decode {job['input']}: {why}") from err
    end = cursor
    while end < len(steps) and steps[end]["op"] in OPS:
        params = {k: v for k, v in steps[end].items() if k != "op"}
        try:
            img = OPS[steps[end]["op"]](img, params)
        except Failed:
            raise
        except Exception as err:  # a bug or an odd image: fail this job, keep serving
            raise Failed("internal", f"step {end} ({steps[end]['op']}): {err!r}") from err
        end += 1
    if end == len(steps):  # the last hop: the result, and the reply
        ext, content_type = FORMATS[job["format"]]
        key, blob = f"results/{job['id']}.{ext}", encode(img, job["format"], job["quality"])
    else:  # work/ images are read once by the next worker: PNG, fast compression
        key, blob = f"work/{job['id']}-{end}.png", encode(img, "png", None, fast=True)
    store.put(key, blob)
    hop = {"worker": NAME, "from": cursor, "to": end, "ms": round((time.monotonic() - started) * 1000)}
    hops = job["hops"] + [hop]
    if end < len(steps):
        queue = owner_queue(steps[end]["op"])
        forward = dict(job, input=key, cursor=end, hops=hops)
        return queue, forward, f"forwarded to {queue} at {end}"
    reply = {"event": "succeeded", "key": key, "content_type": content_type, "width": img.width,
             "height": img.height, "bytes": len(blob), "processing_ms": hop["ms"], "hops": hops}
    return None, reply, f"succeeded {key}"


def publish(channel, exchange, key, message, properties):
    # Confirmed and mandatory, replies too: once this returns, a queue holds the message.
    # One the broker refused or could not route is a transient failure: the job runs again.
    try:
        channel.basic_publish(exchange, key, json.dumps(message).encode(), properties, mandatory=True)
    except (UnroutableError, NackError) as err:
        raise Transient(f"{exchange} [{key}] did not take the message: {type(err).__name__}") from err


def handle(channel, method, props, body, store):
    started = time.monotonic()
    headers = props.headers or {}
    job_id = text(props.message_id or props.correlation_id)
    reply_to = props.reply_to or f"{PREFIX}.replies"
    answer = {"job_id": job_id, "worker": NAME,
              "attempt": 1 + number(headers.get("x-pixmill-retries")) + number(headers.get("x-delivery-count"))}
    stamp = {"x-pixmill-contract": CONTRACT}  # never copy the retry or delivery counters
    try:
        try:
            version = str(text(headers.get("x-pixmill-contract")) or "1.0")
            major = version.split(".")[0].strip()
            if not major.isdigit() or int(major) > 1:  # a newer major, or not a version at all
                raise Failed("unsupported_contract", f"the job message speaks contract {version}; "
                             f"this worker speaks {CONTRACT}: upgrade it to a release that speaks it")
            job = parse(body)
            job_id = answer["job_id"] = job["id"]
            if store.get(f"cancelled/{job_id}") is not None:
                to, message, outcome = None, None, "cancelled"
            else:
                to, message, outcome = run(job, store)
        except Failed as failure:
            to, outcome = None, f"failed {failure.code}: {failure}"
            message = {"event": "failed", "code": failure.code, "message": str(failure)} if job_id else None
        if message is not None and to is None:  # a reply
            publish(channel, f"{PREFIX}.reply", reply_to, dict(answer, **message), pika.BasicProperties(
                correlation_id=job_id, delivery_mode=2, content_type="application/json", headers=stamp))
        elif message is not None:  # a forward
            publish(channel, f"{PREFIX}.forward", to, message, pika.BasicProperties(
                message_id=job_id, correlation_id=job_id, reply_to=reply_to, delivery_mode=2,
                content_type="application/json", headers=stamp))
        channel.basic_ack(method.delivery_tag)  # only now: the broker has the reply or forward
    except Transient as err:
        outcome = f"handed back: {err}"
        time.sleep(1)  # a pause, so a broken store is not retried in a hot loop
        channel.basic_nack(method.delivery_tag, requeue=True)
    ms = round((time.monotonic() - started) * 1000)
    print(f"python-worker: job {job_id} {outcome} ({ms} ms)", file=sys.stderr, flush=True)


def request_stop(signum, _frame):
    # Only set a flag: the job in hand finishes, the consume loop notices within a second.
    global stopping
    stopping = True
    print(f"python-worker: {signal.Signals(signum).name}, stopping", file=sys.stderr, flush=True)


def consume(store):
    """Connects and consumes until asked to stop or the connection drops."""
    params = pika.URLParameters(URL)
    params.blocked_connection_timeout = 60  # a broker in a resource alarm: reconnect, never hang
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=1)  # one job at a time
        for op in OPS:
            queue = f"{PREFIX}.op.{op}"
            try:
                channel.queue_declare(queue, passive=True)  # the gateway owns the topology
            except ChannelClosedByBroker as err:
                if err.reply_code == 404:
                    sys.exit(f"python-worker: queue {queue} does not exist: start a gateway whose "
                             f"PIXMILL_OPS_FILE registers the op {op}")
                raise
            channel.basic_consume(queue, lambda ch, m, p, b: handle(ch, m, p, b, store))  # manual acks
        print(f"python-worker: {NAME} serving {', '.join(OPS)} on {PREFIX}", file=sys.stderr, flush=True)
        while not stopping:
            connection.process_data_events(time_limit=1)
    finally:
        if connection.is_open:
            connection.close()  # anything unacked goes back to the queue


def main():
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    store = open_store(BLOB_URL)
    delay = 1
    while not stopping:
        started = time.monotonic()
        try:
            consume(store)
        except (AMQPConnectionError, AMQPChannelError) as err:  # a lost connection or channel
            if time.monotonic() - started > 30:
                delay = 1  # it ran for a while: start the back-off over
            print(f"python-worker: broker: {err!r}; retrying in {delay}s", file=sys.stderr, flush=True)
            deadline = time.monotonic() + delay
            while not stopping and time.monotonic() < deadline:
                time.sleep(0.2)
            delay = min(delay * 2, 30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
