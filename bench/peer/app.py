"""The peer's HTTP side: a Flask app with the part of pixmill's API that the benchmark's
client uses, in the same shapes.

  POST /v1/jobs?op=resize&width=640&height=400   (or op=blur&sigma=3, op=edges, op=swap)
       body: the image bytes                    → 202 {"id": "<uuid>", "state": "queued"}
  GET  /v1/jobs/<id>?wait=10   long-poll up to `wait` s (at most 30) for the job to end
       → {"id", "state": queued|running|succeeded|failed, "worker",
          "result": {"width", "height", "processing_ms"}}   (result once succeeded,
          "error" once failed)
  GET  /v1/jobs/<id>/result    → the JPEG (image/jpeg), 404 until it exists
  GET  /healthz                → 200 (run.sh waits for it)

An upload is streamed to PEER_DATA_DIR/jobs/<id>/upload, then the Celery task is sent
with that path (the job id is the task id). The job's folder is what tells a known id
from an unknown one (404): Celery reports an id it never saw as PENDING.

Served by gunicorn with gthread workers (run.sh): a long-poll blocks its thread in
`AsyncResult.get()`, which waits on Redis pub/sub, so each waiting client needs a thread
but costs no CPU while it waits.
"""

import os
import shutil
import uuid
from pathlib import Path

from celery import states
from celery.exceptions import TimeoutError as CeleryTimeout
from flask import Flask, jsonify, request, send_file

from tasks import app as celery_app
from tasks import process

DATA_DIR = Path(os.environ.get("PEER_DATA_DIR", "var/peer")).resolve()
JOBS_DIR = DATA_DIR / "jobs"
JOBS_DIR.mkdir(parents=True, exist_ok=True)
MAX_WAIT_S = 30.0
# The largest upload accepted (pixmill's own limit is on pixels; this bounds the disk).
MAX_UPLOAD_BYTES = int(os.environ.get("PEER_MAX_UPLOAD_BYTES", str(64 << 20)))

app = Flask(__name__)
app.config["MAX_CONTENT_LENGTH"] = MAX_UPLOAD_BYTES


def error(status, message):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def parse_op(args):
    """The op and its parameters from the query string, or an error message."""
    op = args.get("op", "")
    try:
        if op == "resize":
            width, height = int(args["width"]), int(args["height"])
            if not (1 <= width <= 10_000 and 1 <= height <= 10_000):
                return None, None, "width and height must be 1..10000"
            return op, {"width": width, "height": height}, None
        if op == "blur":
            sigma = float(args.get("sigma", "3"))
            if not 0 < sigma <= 100:
                return None, None, "sigma must be in (0, 100]"
            return op, {"sigma": sigma}, None
        if op in ("edges", "swap"):
            return op, {}, None
    except (KeyError, ValueError) as e:
        return None, None, f"bad parameters for {op}: {e}"
    return None, None, "op must be one of resize, blur, edges, swap"


def job_dir(job_id):
    """The job's folder, or None for a malformed or unknown id."""
    try:
        canonical = str(uuid.UUID(job_id))
    except ValueError:
        return None
    path = JOBS_DIR / canonical
    return path if path.is_dir() else None


@app.get("/healthz")
def healthz():
    return "ok\n"


@app.post("/v1/jobs")
def submit():
    op, params, problem = parse_op(request.args)
    if problem:
        return error(400, problem)
    job_id = str(uuid.uuid4())
    folder = JOBS_DIR / job_id
    folder.mkdir()
    upload = folder / "upload"
    partial = folder / "upload.part"
    try:
        with open(partial, "wb") as out:
            shutil.copyfileobj(request.stream, out, 1 << 20)
            size = out.tell()
    except BaseException:  # too large (413), or the client went away
        shutil.rmtree(folder, ignore_errors=True)
        raise
    if size == 0:
        shutil.rmtree(folder, ignore_errors=True)
        return error(400, "the request body (the image) is empty")
    os.replace(partial, upload)
    try:
        process.apply_async(args=[str(upload), op, params], task_id=job_id)
    except Exception as e:  # the broker refused or is gone: the job does not exist
        shutil.rmtree(folder, ignore_errors=True)
        return error(503, f"could not queue the job: {e}")
    response = jsonify({"id": job_id, "state": "queued"})
    response.status_code = 202
    response.headers["Location"] = f"/v1/jobs/{job_id}"
    return response


def wait_seconds(args):
    try:
        return min(max(float(args.get("wait", "0")), 0.0), MAX_WAIT_S)
    except ValueError:
        return 0.0


@app.get("/v1/jobs/<job_id>")
def status(job_id):
    folder = job_dir(job_id)
    if folder is None:
        return error(404, "no such job")
    result = celery_app.AsyncResult(folder.name)
    wait = wait_seconds(request.args)
    if wait > 0:
        try:
            # Blocks on the backend's pub/sub until the job ends or the wait is over.
            result.get(timeout=wait, propagate=False, disable_sync_subtasks=False)
        except CeleryTimeout:
            pass
    state, info = result.state, result.info
    body = {"id": folder.name, "worker": None}
    if state == states.SUCCESS:
        body["state"] = "succeeded"
        body["worker"] = info.get("worker")
        body["result"] = {
            "width": info["width"],
            "height": info["height"],
            "processing_ms": info["processing_ms"],
        }
    elif state in states.PROPAGATE_STATES:  # FAILURE, REVOKED
        body["state"] = "failed"
        body["error"] = f"{type(info).__name__}: {info}" if info else state
    elif state == states.STARTED:
        body["state"] = "running"
        if isinstance(info, dict):
            body["worker"] = info.get("hostname")
    else:  # PENDING (queued), RECEIVED, RETRY
        body["state"] = "queued"
    return jsonify(body)


@app.get("/v1/jobs/<job_id>/result")
def result(job_id):
    folder = job_dir(job_id)
    path = folder / "result.jpg" if folder else None
    if path is None or not path.exists():
        return error(404, "no result (yet)")
    return send_file(path, mimetype="image/jpeg")
