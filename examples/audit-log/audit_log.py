#!/usr/bin/env python3
"""Audit log of pixmill job changes: one JSON line per change notice.

A template to copy. It listens on the gateways' events exchange through a queue
of its own, so it never takes a notice away from a gateway or another listener.

Environment:
  PIXMILL_AMQP_URL      broker URL (default amqp://guest:guest@127.0.0.1:5672/%2f)
  PIXMILL_QUEUE_PREFIX  topology prefix (default pixmill): exchange <prefix>.events
  AUDIT_QUEUE           this listener's queue (default <prefix>.audit-log)
  AUDIT_BINDING         binding key (default job.#; job.failed for failures only)
  AUDIT_LOG             file to append to (default: stdout)
"""
import datetime
import json
import os
import signal
import sys
import time

import pika
from pika.exceptions import AMQPConnectionError, ChannelClosedByBroker

URL = os.environ.get("PIXMILL_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
PREFIX = os.environ.get("PIXMILL_QUEUE_PREFIX", "pixmill")
EXCHANGE = f"{PREFIX}.events"
QUEUE = os.environ.get("AUDIT_QUEUE", f"{PREFIX}.audit-log")
BINDING = os.environ.get("AUDIT_BINDING", "job.#")
LOG_PATH = os.environ.get("AUDIT_LOG", "")
ORIGIN_HEADER = "pixmill-origin"  # names the gateway that published the notice
PREFETCH = 50  # notices in flight before acks; bounds what a crash redelivers

stopping = False


def request_stop(signum, _frame):
    # Only set a flag: the consume loop below notices it within a second.
    global stopping
    stopping = True
    print(f"audit-log: {signal.Signals(signum).name}, stopping", file=sys.stderr)


def open_log():
    if not LOG_PATH:
        return sys.stdout, False  # a pipe or terminal cannot be fsynced
    return open(LOG_PATH, "a", encoding="utf-8"), True


def text(value):
    # Header values arrive as str, or as bytes when they are not valid UTF-8.
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def record(method, properties, body):
    """The log line for one delivery. The notice body is kept unchanged."""
    now = datetime.datetime.now(datetime.timezone.utc)
    line = {
        "logged_at": now.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "routing_key": method.routing_key,
        "origin": text((properties.headers or {}).get(ORIGIN_HEADER)),
    }
    try:
        line["notice"] = json.loads(body)
    except ValueError:  # not UTF-8 or not JSON: keep it readable, never crash on it
        line["unreadable"] = body.decode("utf-8", "replace")
    return line


def run(out, can_sync):
    """Connects, subscribes and consumes until asked to stop or the link drops."""
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        channel = connection.channel()
        try:
            # Passive: only checks that the exchange exists. The gateways own it.
            channel.exchange_declare(EXCHANGE, passive=True)
        except ChannelClosedByBroker as err:
            if err.reply_code == 404:
                sys.exit(f"audit-log: exchange {EXCHANGE} does not exist; start a gateway first")
            raise
        # Our own durable quorum queue: it keeps notices while we are down (once bound).
        channel.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        channel.queue_bind(QUEUE, EXCHANGE, routing_key=BINDING)
        channel.basic_qos(prefetch_count=PREFETCH)

        def on_notice(ch, method, properties, body):
            out.write(json.dumps(record(method, properties, body)) + "\n")
            out.flush()
            if can_sync:
                os.fsync(out.fileno())
            # Ack only once the line is on disk: a crash before this redelivers it.
            ch.basic_ack(method.delivery_tag)

        channel.basic_consume(QUEUE, on_notice)  # manual acks (auto_ack=False)
        print(f"audit-log: {QUEUE} <- {EXCHANGE} [{BINDING}]", file=sys.stderr)
        while not stopping:
            connection.process_data_events(time_limit=1)
    finally:
        if connection.is_open:
            connection.close()  # unacked notices go back to the queue


def main():
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    out, can_sync = open_log()
    delay = 1
    try:
        while not stopping:
            started = time.monotonic()
            try:
                run(out, can_sync)
            except AMQPConnectionError as err:  # includes a lost or closed connection
                if time.monotonic() - started > 30:
                    delay = 1  # it ran for a while: start the backoff over
                print(f"audit-log: broker: {err!r}; retrying in {delay}s", file=sys.stderr)
                deadline = time.monotonic() + delay
                while not stopping and time.monotonic() < deadline:
                    time.sleep(0.2)
                delay = min(delay * 2, 30)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
