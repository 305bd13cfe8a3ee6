#!/usr/bin/env node
// A pixmill worker in Node.js that serves one custom op, `threshold`: pixels at or above
// `level` (an integer 0..255, default 128) turn white, the others black.
//
// A template to copy. It follows pixmill's custom-op worker contract, version 1.1: the
// numbers in the comments below are the steps of its "handling one delivery". For an op
// of your own, change OP, checkStep() and applyStep(); the rest stays as it is.
//
// Environment:
//   PIXMILL_AMQP_URL      broker URL (default amqp://guest:guest@127.0.0.1:5672/%2f)
//   PIXMILL_QUEUE_PREFIX  topology prefix (default pixmill): this worker consumes <prefix>.op.threshold
//   PIXMILL_BLOB_URL      file://PATH (a folder) or s3://BUCKET[/PREFIX]
//                         (default file://$PIXMILL_DATA_DIR/blobs, PIXMILL_DATA_DIR default var/data)
//   PIXMILL_WORKER_NAME   its name in replies and hops (default node-<hostname>-<pid>)
//   AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION (default us-east-1):
//                         for s3:// only; path-style addressing, http:// endpoints allowed
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { GetObjectCommand, HeadObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import amqp from 'amqplib';
import sharp from 'sharp';

const OP = 'threshold';
const CONTRACT = '1.1';
const BUILT_IN = new Set(['resize', 'crop', 'blur', 'edges', 'swap', 'grayscale', 'rotate', 'flip']);
const AMQP_URL = process.env.PIXMILL_AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/%2f';
const PREFIX = process.env.PIXMILL_QUEUE_PREFIX || 'pixmill';
const BLOB_URL = process.env.PIXMILL_BLOB_URL || `file://${process.env.PIXMILL_DATA_DIR || 'var/data'}/blobs`;
const NAME = process.env.PIXMILL_WORKER_NAME || `node-${os.hostname()}-${process.pid}`;
const QUEUE = `${PREFIX}.op.${OP}`;
const CONFIRM_TIMEOUT_MS = 30_000; // a broker under a resource alarm stalls publishers
const FORMATS = {
  jpeg: { ext: 'jpg', type: 'image/jpeg', encode: (img, quality) => img.jpeg({ quality }) },
  png: { ext: 'png', type: 'image/png', encode: (img) => img.png() },
  webp: { ext: 'webp', type: 'image/webp', encode: (img, quality) => img.webp({ quality }) },
};
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// A blob key: `/`-separated parts of letters, digits, `-`, `_` and `.`, none of them `.` or `..`.
const isKey = (k) => typeof k === 'string' && k.length <= 200
  && k.split('/').every((p) => /^[A-Za-z0-9_.-]+$/.test(p) && p !== '.' && p !== '..');

/** A job that cannot succeed: answered with a `failed` reply, then acked. */
class JobError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}
/** A misconfiguration that no retry mends: the process exits. */
class Fatal extends Error {}
class NotFound extends Error {}

// ---- the op -----------------------------------------------------------------------------

/** Checks one step's parameters (the step without "op"). The gateway validated them already. */
function checkStep({ op, ...params }) {
  const unknown = Object.keys(params).find((name) => name !== 'level');
  if (unknown) throw new JobError('invalid_step', `${op}: unknown parameter "${unknown}"`);
  const level = params.level ?? 128;
  if (!Number.isInteger(level) || level < 0 || level > 255) {
    throw new JobError('invalid_step', `${op}: level must be an integer 0..255, not ${JSON.stringify(level)}`);
  }
  return { level };
}

/** Adds the step to a sharp pipeline. */
const applyStep = (image, { level }) => image.threshold(level);

// ---- blob stores: get (throws NotFound), exists, put --------------------------------------

function folderStore(root) {
  const file = (key) => path.join(root, key);
  return {
    async get(key) {
      return fs.readFile(file(key)).catch((e) => { throw e.code === 'ENOENT' ? new NotFound(key) : e; });
    },
    async exists(key) {
      return fs.access(file(key)).then(() => true, (e) => { if (e.code === 'ENOENT') return false; throw e; });
    },
    // A reader never sees half a file: write under tmp/, fsync, rename, fsync the folder.
    async put(key, bytes) {
      const tmp = path.join(root, 'tmp', randomUUID());
      const dest = file(key);
      await fs.mkdir(path.dirname(tmp), { recursive: true });
      await fs.mkdir(path.dirname(dest), { recursive: true });
      const out = await fs.open(tmp, 'w');
      try { await out.writeFile(bytes); await out.sync(); } finally { await out.close(); }
      await fs.rename(tmp, dest).catch(async (e) => { await fs.rm(tmp, { force: true }); throw e; });
      const dir = await fs.open(path.dirname(dest), 'r');
      try { await dir.sync(); } finally { await dir.close(); }
    },
  };
}

function s3Store(Bucket, prefix) {
  const client = new S3Client({
    endpoint: process.env.AWS_ENDPOINT_URL || undefined, // unset: AWS itself
    region: process.env.AWS_REGION || 'us-east-1',
    forcePathStyle: true,
    maxAttempts: 3, // a longer outage is for the broker's redelivery to ride out
    requestHandler: { connectionTimeout: 3_000, requestTimeout: 30_000 },
    // Checksums only where S3 demands them: not every S3-compatible store knows the newer ones.
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  });
  const Key = (key) => (prefix ? `${prefix}/${key}` : key);
  const missing = (e) => e.name === 'NoSuchKey' || e.name === 'NotFound' || e.$metadata?.httpStatusCode === 404;
  return {
    async get(key) {
      try {
        const got = await client.send(new GetObjectCommand({ Bucket, Key: Key(key) }));
        return Buffer.from(await got.Body.transformToByteArray());
      } catch (e) {
        throw missing(e) ? new NotFound(key) : e;
      }
    },
    async exists(key) {
      return client.send(new HeadObjectCommand({ Bucket, Key: Key(key) }))
        .then(() => true, (e) => { if (missing(e)) return false; throw e; });
    },
    async put(key, bytes, ContentType) {
      await client.send(new PutObjectCommand({ Bucket, Key: Key(key), Body: bytes, ContentType }));
    },
  };
}

function openStore(url) {
  const scheme = url.slice(0, Math.max(0, url.indexOf('://')));
  const rest = url.slice(scheme.length + 3);
  if (scheme === 'file' && rest) return folderStore(rest); // file://var/data is relative
  const [bucket, ...prefix] = rest.split('/');
  if (scheme === 's3' && bucket) return s3Store(bucket, prefix.filter(Boolean).join('/'));
  throw new Fatal(`PIXMILL_BLOB_URL=${url}: expected file://PATH or s3://BUCKET[/PREFIX]`);
}

// ---- one delivery -------------------------------------------------------------------------

function parseJob(content) {
  let job;
  try { job = JSON.parse(content.toString('utf8')); } catch (e) {
    throw new JobError('invalid_request', `the body is not JSON: ${e.message}`);
  }
  const check = (ok, why) => { if (!ok) throw new JobError('invalid_request', `not a job request: ${why}`); };
  check(job && typeof job === 'object' && !Array.isArray(job), 'not an object');
  check(typeof job.id === 'string' && UUID.test(job.id), 'id must be a UUID');
  check(isKey(job.input), 'input must be a blob key');
  check(Array.isArray(job.steps) && job.steps.every((s) => typeof s?.op === 'string'), 'steps must be ops');
  job.cursor ??= 0;
  job.hops ??= [];
  check(Number.isInteger(job.cursor) && job.cursor >= 0 && job.cursor < job.steps.length, 'cursor out of range');
  check(Array.isArray(job.hops), 'hops must be a list');
  check(Object.hasOwn(FORMATS, job.format), 'format must be jpeg, png or webp');
  check(Number.isInteger(job.quality) && job.quality >= 1 && job.quality <= 100, 'quality must be 1..100');
  return job;
}

/** Publishes JSON and waits for the broker's confirm. A mandatory message that no queue took
 * comes back in a basic.return, which the broker sends before its ack: a failure too. */
function publish(link, exchange, routingKey, body, properties, mandatory) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the broker did not confirm in time')), CONFIRM_TIMEOUT_MS);
    const done = (err) => {
      clearTimeout(timer);
      if (err) reject(err);
      else if (link.returned) reject(new Error(`unroutable: no queue bound to ${exchange} with key ${routingKey}`));
      else resolve();
    };
    link.returned = false;
    const options = {
      ...properties, mandatory, persistent: true, contentType: 'application/json',
      headers: { 'x-pixmill-contract': CONTRACT }, // and nothing else: no retry counts
    };
    try {
      link.ch.publish(exchange, routingKey, Buffer.from(JSON.stringify(body)), options,
        (err) => done(err && new Error(`the broker refused the message to ${exchange}`)));
    } catch (e) { done(e); } // the channel is closed
  });
}

const int = (v) => (Number.isFinite(Number(v)) ? Number(v) : 0);
const fromRaw = ({ data, info: { width, height, channels } }) => sharp(data, { raw: { width, height, channels } });

/** Handles a delivery up to its ack; returns the outcome for the log. Throws on a transient failure. */
async function handle(link, msg, blobs) {
  const { headers = {}, messageId, replyTo } = msg.properties;
  const job = { id: messageId ? String(messageId) : null }; // until the body is read
  const attempt = 1 + int(headers['x-pixmill-retries']) + int(headers['x-delivery-count']);
  const reply = (body) => publish(link, `${PREFIX}.reply`, replyTo || `${PREFIX}.replies`,
    { job_id: job.id, worker: NAME, attempt, ...body }, { correlationId: job.id }, true);
  try {
    // 1. The contract's major version must be 1 (no header: 1.0; an unreadable one is refused).
    const spoken = String(headers['x-pixmill-contract'] ?? '1.0');
    if (!(Number.parseInt(spoken, 10) <= 1)) {
      throw new JobError('unsupported_contract',
        `the message speaks contract ${spoken}; this worker speaks ${CONTRACT}`);
    }
    Object.assign(job, parseJob(msg.content)); // 2.
    if (await blobs.exists(`cancelled/${job.id}`)) return 'cancelled'; // 3.

    // 4. Run our steps from the cursor on, up to the first step that is not ours.
    const { cursor, steps } = job;
    let end = cursor;
    while (end < steps.length && steps[end].op === OP) end++;
    const next = steps[end]?.op;
    const nextQueue = BUILT_IN.has(next) ? `${PREFIX}.jobs` : `${PREFIX}.op.${next}`;
    const forward = (body) => publish(link, `${PREFIX}.forward`, nextQueue, body,
      { messageId: job.id, correlationId: job.id, replyTo }, true);
    if (end === cursor) { await forward(job); return `not ours: passed on to ${nextQueue}`; }
    const params = steps.slice(cursor, end).map(checkStep);

    const started = Date.now();
    const input = await blobs.get(job.input).catch((e) => {
      throw e instanceof NotFound ? new JobError('input_missing', `no blob at ${job.input}`) : e;
    });
    let img = await sharp(input).raw().toBuffer({ resolveWithObject: true })
      .catch((e) => { throw new JobError('undecodable_image', `${job.input}: ${e.message}`); });
    for (const p of params) { // one pipeline per step: sharp keeps one threshold per pipeline
      img = await applyStep(fromRaw(img), p).raw().toBuffer({ resolveWithObject: true })
        .catch((e) => { throw new JobError('internal', `${OP}: ${e.message}`); });
    }
    const last = end === steps.length;
    const format = last ? FORMATS[job.format] : FORMATS.png;
    const encoder = last ? format.encode(fromRaw(img), job.quality) : fromRaw(img).png({ compressionLevel: 1 });
    const bytes = await encoder.toBuffer().catch((e) => { throw new JobError('encode_failed', e.message); });
    const key = last ? `results/${job.id}.${format.ext}` : `work/${job.id}-${end}.png`;
    await blobs.put(key, bytes, format.type);
    const ms = Date.now() - started; // 5.
    const hops = [...job.hops, { worker: NAME, from: cursor, to: end, ms }];

    if (last) { // 6a.
      const { width, height } = img.info;
      await reply({ event: 'succeeded', key, content_type: format.type, width, height,
        bytes: bytes.length, processing_ms: ms, hops });
      return `succeeded ${key}`;
    }
    await forward({ ...job, input: key, cursor: end, hops }); // 6b.
    return `ran steps ${cursor}..${end}, forwarded to ${nextQueue}`;
  } catch (e) {
    if (!(e instanceof JobError)) throw e;
    if (!job.id) return `failed ${e.code} (no job id: no reply)`;
    await reply({ event: 'failed', code: e.code, message: e.message });
    return `failed ${e.code}: ${e.message}`;
  }
}

async function onDelivery(link, msg, blobs) {
  const t0 = Date.now();
  let outcome;
  try {
    outcome = await handle(link, msg, blobs);
    link.ch.ack(msg); // 7. only once the broker confirmed the reply or forward
  } catch (e) { // 8. transient (blob store, broker): hand the job back after a pause
    outcome = `to retry: ${e.name}: ${e.message}`;
    await sleep(1000);
    try { link.ch.nack(msg, false, true); } catch { /* channel gone: the broker requeues it */ }
  }
  console.error(`${NAME}: job ${msg.properties.messageId ?? '-'} ${outcome} ${Date.now() - t0}ms`);
}

// ---- connection, consumer, shutdown ---------------------------------------------------------

let stopping = false;
let stopNow = async () => {}; // while consuming: stop taking jobs, finish the one in hand, close

/** Connects and consumes until the connection closes. */
async function run(blobs) {
  const conn = await amqp.connect(AMQP_URL, { timeout: 10_000, clientProperties: { connection_name: NAME } });
  conn.on('error', () => {}); // the 'close' below reports it
  const closed = new Promise((resolve) => conn.on('close', resolve));
  try {
    const ch = await conn.createConfirmChannel();
    ch.on('error', (e) => console.error(`${NAME}: channel: ${e.message}`));
    ch.on('close', () => conn.close().catch(() => {})); // a channel closed by the broker: start over
    await ch.checkQueue(QUEUE).catch((e) => { // passive: the gateway declares the topology
      if (e.code !== 404) throw e;
      throw new Fatal(
        `queue ${QUEUE} does not exist: start a gateway whose PIXMILL_OPS_FILE registers the op ${OP}`);
    });
    const link = { ch, returned: false };
    ch.on('return', () => { link.returned = true; });
    await ch.prefetch(1); // 9. one job at a time; an unacked one goes back if we die
    let current = Promise.resolve();
    const { consumerTag } = await ch.consume(QUEUE, (msg) => {
      if (msg) current = onDelivery(link, msg, blobs);
      else conn.close().catch(() => {}); // the broker cancelled the consumer
    }, { noAck: false });
    stopNow = async () => {
      await ch.cancel(consumerTag).catch(() => {});
      await current;
      await ch.close().catch(() => {}); // its close-ok comes after the broker took the last ack
      await conn.close().catch(() => {});
    };
    console.error(`${NAME}: serving ${OP} from ${QUEUE} (contract ${CONTRACT})`);
    if (stopping) await stopNow();
  } catch (e) {
    await conn.close().catch(() => {});
    throw e;
  }
  const err = await closed;
  stopNow = async () => {};
  if (err) throw err;
}

function onSignal(signal) { // 10.
  if (stopping) return;
  stopping = true;
  console.error(`${NAME}: ${signal}: no new jobs; exiting after the one in hand, if any`);
  stopNow();
}

async function main() {
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    const blobs = openStore(BLOB_URL);
    let delay = 1000;
    while (!stopping) { // 11. reconnect with back-off
      const started = Date.now();
      await run(blobs).catch((e) => {
        if (e instanceof Fatal) throw e;
        console.error(`${NAME}: broker: ${e.message}`);
      });
      if (stopping) break;
      if (Date.now() - started > 30_000) delay = 1000; // it ran a while: start the back-off over
      console.error(`${NAME}: reconnecting in ${delay / 1000}s`);
      for (const until = Date.now() + delay; !stopping && Date.now() < until;) await sleep(200);
      delay = Math.min(delay * 2, 30_000);
    }
  } catch (e) {
    console.error(`${NAME}: ${e.message}`);
    process.exit(1);
  }
  process.exit(0); // the S3 client's idle sockets would keep the process alive
}

main();
