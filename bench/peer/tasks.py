"""The peer's Celery side: the app (broker, result backend, reliability settings) and the
one task that does a job.

`make bench` measures pixmill end to end against this: the usual Python stack for the
same service (Flask + gunicorn in front, Celery workers behind RabbitMQ, Pillow and
OpenCV doing the work), configured the way the usual recipes say.

Broker: RabbitMQ at PEER_AMQP_URL, on a queue of its own (PEER_QUEUE) so it never
shares pixmill's queues on the same broker. Durable queue, persistent messages and
publisher confirms: a 202 means the broker has the job.

Result backend: Redis (PEER_REDIS_URL, or 127.0.0.1:PEER_REDIS_PORT; run.sh starts a
private instance). It is what the usual Flask + Celery recipes pair with RabbitMQ, and
it is the backend that makes long-polling cheap across gunicorn processes: a task's
state is one key any process can read, and `AsyncResult.get()` waits on Redis pub/sub,
so a waiting request wakes the moment the worker stores the result, with no polling.
(The `rpc://` backend sends results back to the process that sent the task only, so a
long-poll served by another gunicorn process would never see them; a database backend
can only be polled.)

Reliability, as the Celery docs recommend for work that must not be lost:
  - task_acks_late: a job is acknowledged after it ran, so a worker that dies mid-job
    leaves it on the queue for another;
  - task_reject_on_worker_lost: ... including when the pool process itself is killed;
  - worker_prefetch_multiplier = 1: each pool process holds one job, so a slow job does
    not keep others waiting behind it while another process is idle;
  - task_track_started: "running" is visible while a job runs;
  - a hard time limit, so a stuck job frees its process.

The work is the baseline's own code (bench/baseline/pillow_opencv.py, imported here):
decode with Pillow, EXIF orientation, RGB, the step, JPEG quality 85 with Pillow.
OpenCV runs on one thread per process; the parallelism is Celery's pool.
"""

import json
import os
import socket
import sys
import time
from pathlib import Path

from celery import Celery
from PIL import Image, ImageOps

# The baseline's pipeline, shared so both comparisons do exactly the same work.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "baseline"))
import pillow_opencv as baseline  # noqa: E402  (also sets cv2.setNumThreads(1))

cv2, np = baseline.cv2, baseline.np
cv2.setNumThreads(1)

AMQP_URL = os.environ.get("PEER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f")
QUEUE = os.environ.get("PEER_QUEUE", "peer.jobs")
REDIS_URL = os.environ.get(
    "PEER_REDIS_URL", f"redis://127.0.0.1:{os.environ.get('PEER_REDIS_PORT', '6391')}/0"
)

app = Celery("peer", broker=AMQP_URL, backend=REDIS_URL)
app.conf.update(
    # Routing: one durable queue of the peer's own (classic, Celery's default; set
    # PEER_QUEUE_TYPE=quorum to replicate it the way pixmill's queues are, under another
    # PEER_QUEUE: a queue's type is fixed when it is first declared. With quorum, Celery
    # also declares its native delayed-delivery topology on the broker at worker start:
    # 28 quorum queues celery_delayed_0..27 and their exchanges, which stay there).
    task_default_queue=QUEUE,
    task_default_exchange=QUEUE,
    task_default_routing_key=QUEUE,
    task_default_queue_type=os.environ.get("PEER_QUEUE_TYPE", "classic"),
    task_default_delivery_mode="persistent",
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    # Each gunicorn thread may publish at once: enough pooled connections for them all.
    broker_pool_limit=int(os.environ.get("PEER_HTTP_THREADS", "16")) + 2,
    # Reliability.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    worker_cancel_long_running_tasks_on_connection_loss=True,
    task_track_started=True,
    task_time_limit=120,
    task_soft_time_limit=100,
    # JSON only, results kept an hour (a job is read within seconds of finishing).
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    result_expires=3600,
    result_backend_always_retry=True,
    result_backend_max_retries=10,
    # No monitoring events: nothing here reads them.
    worker_send_task_events=False,
    task_send_sent_event=False,
)


def resize(width, height):
    # The baseline's resize, at the requested size: cover it with Lanczos, centre-cropped.
    return lambda img: ImageOps.fit(img, (width, height), Image.Resampling.LANCZOS)


def blur(sigma):
    if sigma == 3:
        return baseline.blur
    return lambda img: Image.fromarray(cv2.GaussianBlur(np.asarray(img), (0, 0), sigma))


def step_for(op, params):
    if op == "resize":
        return resize(int(params["width"]), int(params["height"]))
    if op == "blur":
        return blur(float(params["sigma"]))
    if op == "edges":
        return baseline.edges
    if op == "swap":
        return baseline.swap
    raise ValueError(f"unknown op {op!r}")


def render(data, op, params):
    """Decode, run the step, encode: the baseline's `job`. Returns (jpeg, (w, h), ms)."""
    step = step_for(op, params)
    size = []

    def measured(img):
        out = step(img)
        size.append(out.size)
        return out

    started = time.perf_counter()
    jpeg = baseline.job(data, measured)
    return jpeg, size[0], (time.perf_counter() - started) * 1000.0


def write_atomically(path, data):
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@app.task(bind=True, name="peer.process")
def process(self, upload_path, op, params):
    """Runs one job: the upload at `upload_path` → `result.jpg` beside it.

    Late acknowledgement means a job can be delivered again after it finished (a worker
    lost between storing the result and acknowledging). The first run leaves
    `result.json` beside the JPEG and removes the upload, so a repeat returns the same
    answer instead of failing on the missing upload.
    """
    upload = Path(upload_path)
    job_dir = upload.parent
    meta_path = job_dir / "result.json"
    if not upload.exists() and meta_path.exists():
        return json.loads(meta_path.read_text())
    jpeg, (width, height), processing_ms = render(upload.read_bytes(), op, params)
    write_atomically(job_dir / "result.jpg", jpeg)
    meta = {
        "width": width,
        "height": height,
        "processing_ms": processing_ms,
        "worker": self.request.hostname or socket.gethostname(),
    }
    write_atomically(meta_path, json.dumps(meta).encode())
    upload.unlink(missing_ok=True)
    return meta
