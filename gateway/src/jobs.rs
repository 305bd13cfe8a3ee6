//! The jobs service: accepting a job, looking it up, waiting on it, cancelling it.
//!
//! Accepting follows one order, so nothing is lost or left behind: validate everything,
//! store the input blob, record the task as `queued` (within the tenant's in-flight
//! quota), publish with a confirm, and only then answer 202. If the publish fails the
//! task and blob are removed again and the client gets a 503 (or 429 when the queue is
//! full) telling it to retry. A job past its tenant's fair-share window is recorded
//! *held* and answered 202 without a publish: it is durable in the store, and
//! [`crate::fair_share`] publishes it in turn.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;

use pixmill_shared::{
    BlobError, Blobs, JobRequest, JobStep, Limits, PlanError, Variant,
    amqp::PublishError,
    keys,
    metrics::{Event, op_label},
    plan_job,
};
use sha2::{Digest, Sha256};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    admission::Reservation,
    error::{ApiCode, ApiError},
    events::{Notifier, Seen, Watch},
    fair_share::FairShare,
    inspect::inspect,
    publisher::Publisher,
    store::{
        Admission, Admitted, Callback, CallbackState, Change, CheckChange, Job, JobState, NewJob,
        Scope, Store, StoreError,
    },
    tenants::{Effective, Tenants, over_quota},
    upload::{JobSpec, Submission, job_spec},
};

/// Longest `?wait=` a client may ask for: the long-poll's part of the API contract.
pub const MAX_WAIT_SECS: u64 = 30;

/// Shared state behind every route.
#[derive(Debug, Clone)]
pub struct Jobs {
    /// The task store (SQLite or PostgreSQL).
    pub store: Store,
    /// The blob store (folder or S3).
    pub blobs: Blobs,
    pub publisher: Arc<Publisher>,
    /// Wakes waiters here and tells other gateways through the events exchange.
    pub notifier: Notifier,
    pub limits: Limits,
    /// The custom ops a job may name.
    pub ops: crate::custom_ops::CustomOps,
    /// Webhook rules, for checking a `callback_url` at submit.
    pub webhooks: crate::webhooks::WebhookSettings,
    /// Records confirmed publishes in the store, in batches, off the request path.
    pub published: PublishedMarks,
    /// Tenants' quotas and rates.
    pub tenants: Tenants,
    /// Tenants' windows onto the jobs queue.
    pub fair_share: FairShare,
}

/// Records that the broker confirmed jobs' messages. The record only spares a job the
/// sweeper's re-publish, so it need not hold up the 202: a background task writes every
/// mark that is waiting in one statement.
#[derive(Debug, Clone)]
pub struct PublishedMarks(tokio::sync::mpsc::UnboundedSender<Uuid>);

impl PublishedMarks {
    /// Most marks in one statement.
    const BATCH: usize = 256;

    /// Starts the writer; it stops once every handle is dropped.
    pub fn start(store: Store) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut ids = Vec::with_capacity(Self::BATCH);
            while rx.recv_many(&mut ids, Self::BATCH).await > 0 {
                if let Err(e) = store.mark_published(&ids).await {
                    warn!(jobs = ids.len(), error = %e, "could not record confirmed publishes; the sweeper will repeat them");
                }
                ids.clear();
            }
        });
        Self(tx)
    }

    fn mark(&self, id: Uuid) {
        if self.0.send(id).is_err() {
            warn!(job_id = %id, "the publish recorder has stopped; the sweeper will repeat this publish");
        }
    }
}

/// What `submit` did.
#[derive(Debug)]
pub enum Submitted {
    /// A new job, confirmed by the broker.
    Created(Job),
    /// The `Idempotency-Key` was seen before with the same request: the same job.
    Replayed(Job),
}

/// An upload on its way to the blob store: its bytes, and the share of the upload
/// budget they hold.
struct Upload {
    image: Bytes,
    held: Reservation,
}

impl Jobs {
    /// Validates and queues a submission as a job of `tenant`, within its `limits`;
    /// returns the job once the broker has it (or, held for its fair share, once it is
    /// stored). Idempotency keys are per tenant.
    pub async fn submit(
        &self,
        tenant: &str,
        limits: &Effective,
        submission: Submission,
        held: Reservation,
        idempotency_key: Option<String>,
    ) -> Result<Submitted, ApiError> {
        let spec = job_spec(&submission.params, &self.ops)?;
        let idempotency = match idempotency_key {
            None => None,
            Some(key) => {
                let hash = request_hash(&submission);
                if let Some(job) = self.replay(tenant, &key, &hash).await? {
                    return Ok(Submitted::Replayed(job));
                }
                Some((key, hash))
            }
        };
        let admission = Admission {
            max_inflight: limits.max_inflight,
            window: self.fair_share.window(),
            interactive: spec.interactive,
        };
        let (request, callback_url) = self.check(&submission, spec).await?;
        let upload_bytes = submission.image.len() as u64;
        let upload = Upload {
            image: submission.image,
            held,
        };
        let admitted = match self
            .enqueue(
                tenant,
                upload,
                &request,
                idempotency,
                callback_url.clone(),
                admission,
            )
            .await?
        {
            Enqueued::Replayed(job) => return Ok(Submitted::Replayed(*job)),
            Enqueued::New(admitted) => admitted,
        };
        // The broker has the job now (or the store holds it for its turn), so the answer
        // is 202 whatever happens next. If the record of the publish fails (or the
        // gateway dies first), the sweeper finds the job unconfirmed and publishes it
        // again; a duplicate message is harmless.
        if admitted == Admitted::Released {
            self.published.mark(request.id);
        }
        Event::JobSubmitted {
            job_id: request.id,
            upload_bytes,
        }
        .emit();
        let job = accepted(tenant, request, callback_url, admitted);
        self.notifier.changed(&job);
        Ok(Submitted::Created(job))
    }

    /// Checks the image, the callback URL and the pipeline against the limits; returns
    /// the job's request, under a new id, and its callback URL.
    async fn check(
        &self,
        submission: &Submission,
        spec: JobSpec,
    ) -> Result<(JobRequest, Option<String>), ApiError> {
        let image = inspect(&submission.image, &self.limits)?;
        let callback_url = match submission
            .params
            .get("callback_url")
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(url) => Some(crate::webhooks::check_url(&self.webhooks, url).await?),
        };
        // `at` names the variant a refusal is about, if any.
        let limit_error = |e: PlanError, at: &str| match e {
            PlanError::TooManyPixels { .. } => ApiError::new(
                ApiCode::TooManyPixels,
                format!("{at}{e} (PIXMILL_MAX_PIXELS)"),
            ),
            PlanError::TooManySteps { .. } => ApiError::new(
                ApiCode::TooManySteps,
                format!("{at}{e} (PIXMILL_MAX_STEPS)"),
            ),
            PlanError::InvalidStep { .. } => ApiError::invalid(format!("{at}{e}")),
        };
        plan_job(&spec.steps, image.width, image.height, &self.limits)
            .map_err(|e| limit_error(e, ""))?;
        let format = spec.format.unwrap_or_else(|| image.default_output());
        let mut variants = Vec::with_capacity(spec.variants.len());
        for (i, variant) in spec.variants.into_iter().enumerate() {
            // Each variant is checked as the job it stands for: the shared steps, then
            // its own.
            let whole: Vec<JobStep> = spec
                .steps
                .iter()
                .cloned()
                .chain(variant.steps.iter().cloned().map(JobStep::Builtin))
                .collect();
            plan_job(&whole, image.width, image.height, &self.limits)
                .map_err(|e| limit_error(e, &format!("variants[{i}] ({}): ", variant.name)))?;
            variants.push(Variant {
                name: variant.name,
                steps: variant.steps,
                format: variant.format.unwrap_or(format),
                quality: variant.quality,
            });
        }
        let id = Uuid::new_v4();
        // With variants, the envelope's format and quality repeat the first variant's.
        let (format, quality) = variants
            .first()
            .map_or((format, spec.quality), |v| (v.format, v.quality));
        let request = JobRequest {
            id,
            input: keys::input(id),
            steps: spec.steps,
            format,
            quality,
            cursor: 0,
            hops: Vec::new(),
            variants,
        };
        Ok((request, callback_url))
    }

    /// Stores the upload and the `queued` record, then publishes with a confirm (unless
    /// the job is held for its fair share); a step that fails undoes the ones before it.
    /// The upload's bytes and its share of the upload budget are given back once the
    /// blob store holds them, not kept through the record and the publish.
    /// Returns the job that an identical request with the same idempotency key created
    /// first, when that request won a race.
    async fn enqueue(
        &self,
        tenant: &str,
        upload: Upload,
        request: &JobRequest,
        idempotency: Option<(String, String)>,
        callback_url: Option<String>,
        admission: Admission,
    ) -> Result<Enqueued, ApiError> {
        let id = request.id;
        let Upload { image, held } = upload;
        self.blobs
            .put(&request.input, image)
            .await
            .map_err(|e| blob_unavailable("the upload could not be stored", &e))?;
        drop(held);
        let stored = self
            .store
            .insert(
                NewJob {
                    id,
                    tenant: tenant.to_string(),
                    steps: request.steps.clone(),
                    variants: request.variants.clone(),
                    format: request.format,
                    quality: request.quality,
                    input_key: request.input.clone(),
                    idempotency: idempotency.clone(),
                    callback_url,
                },
                admission,
            )
            .await;
        let admitted = match stored {
            Ok(admitted) => admitted,
            Err(e) => {
                let _ = self.blobs.delete(&request.input).await;
                // Two identical requests raced on one key: the other one won; answer
                // with it.
                if let (StoreError::DuplicateKey, Some((key, hash))) = (&e, &idempotency)
                    && let Some(job) = self.replay(tenant, key, hash).await?
                {
                    return Ok(Enqueued::Replayed(Box::new(job)));
                }
                if let StoreError::OverQuota { open, max } = e {
                    return Err(over_quota(tenant, open, max));
                }
                return Err(e.into());
            }
        };
        if admitted == Admitted::Released
            && let Err(e) = self.publisher.publish(request).await
        {
            warn!(job_id = %id, error = %e, "publish failed; the job is withdrawn");
            let _ = self.store.delete(id).await;
            let _ = self.blobs.delete(&request.input).await;
            return Err(publish_error(&e));
        }
        Ok(Enqueued::New(admitted))
    }

    /// The job an idempotency key already names, if its request matches.
    async fn replay(&self, tenant: &str, key: &str, hash: &str) -> Result<Option<Job>, ApiError> {
        match self.store.find_by_key(tenant, key).await? {
            None => Ok(None),
            Some((job, stored)) if stored == hash => Ok(Some(job)),
            Some((job, _)) => Err(ApiError::new(
                ApiCode::IdempotencyKeyReused,
                format!(
                    "Idempotency-Key {key:?} was already used for job {} with a different request",
                    job.id
                ),
            )),
        }
    }

    /// Looks a job up by the id as given in the URL, within `scope`: 404 for anything
    /// malformed, unknown, or another tenant's.
    pub async fn get(&self, scope: &Scope, raw_id: &str) -> Result<Job, ApiError> {
        let id = Uuid::parse_str(raw_id).map_err(|_| ApiError::not_found(raw_id))?;
        self.store
            .get(scope, id)
            .await?
            .ok_or_else(|| ApiError::not_found(raw_id))
    }

    /// Returns the job once it is terminal, or its current state when `wait` runs out.
    pub async fn wait(&self, scope: &Scope, raw_id: &str, wait: Duration) -> Result<Job, ApiError> {
        // Subscribe before the first read, so a change in between is not missed.
        let changes = self.notifier.events.subscribe();
        let job = self.get(scope, raw_id).await?;
        if job.state.is_terminal() || wait.is_zero() {
            return Ok(job);
        }
        let deadline = tokio::time::Instant::now() + wait;
        let mut watch = Watch::new(changes, job.id);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return self.get(scope, raw_id).await,
                seen = watch.next() => {
                    let (now, closed) = match seen {
                        Seen::Job(job) => (Arc::unwrap_or_clone(job), false),
                        Seen::Reread => (self.get(scope, raw_id).await?, false),
                        Seen::Closed => (self.get(scope, raw_id).await?, true),
                    };
                    if now.state.is_terminal() || closed {
                        return Ok(now);
                    }
                }
            }
        }
    }

    /// `DELETE`: cancels a queued job, or deletes a finished job's result and input.
    /// Only a job within `scope` can be cancelled; any other is not found.
    pub async fn cancel(&self, scope: &Scope, raw_id: &str) -> Result<Job, ApiError> {
        let job = self.get(scope, raw_id).await?;
        let id = job.id;
        match job.state {
            JobState::Queued => {
                // The marker first: a worker that takes the message from now on skips it.
                self.blobs
                    .mark_cancelled(id)
                    .await
                    .map_err(|e| blob_unavailable("the cancellation could not be recorded", &e))?;
                if self.record(id, Change::Cancelled).await?.is_some() {
                    let _ = self.blobs.delete(&job.input_key).await;
                    info!(job_id = %id, "job cancelled");
                } else {
                    // A worker started it in the meantime; it runs to the end.
                    let _ = self.blobs.clear_cancelled(id).await;
                    return Err(not_cancellable(id));
                }
            }
            JobState::Running => return Err(not_cancellable(id)),
            JobState::Succeeded | JobState::Failed => {
                for key in job.result_keys() {
                    let _ = self.blobs.delete(&key).await;
                }
                let _ = self.blobs.delete(&job.input_key).await;
                self.store.mark_result_deleted(id).await?;
                info!(job_id = %id, "result deleted on request");
            }
            JobState::Cancelled => {}
            JobState::Expired => return Err(expired(id)),
        }
        self.get(scope, raw_id).await
    }

    /// Applies `change` to job `id` and, when it applied, tells every listener.
    /// Returns the job as it is now, or None when the change did not apply.
    pub async fn record(&self, id: Uuid, change: Change) -> Result<Option<Job>, StoreError> {
        self.record_checked(id, change, None).await
    }

    /// [`record`](Self::record), with the change first passed through `check` with the
    /// job as stored ([`crate::store::TaskStore::apply_checked`]).
    pub async fn record_checked(
        &self,
        id: Uuid,
        change: Change,
        check: Option<CheckChange>,
    ) -> Result<Option<Job>, StoreError> {
        // A quick job's final reply also says when it started: no `started` came.
        let unreported_start = matches!(
            &change,
            Change::Succeeded {
                started_at: Some(_),
                ..
            } | Change::Failed {
                started_at: Some(_),
                ..
            }
        );
        let changed = match check {
            Some(check) => self.store.apply_checked(id, change, check).await?,
            None => self.store.apply(id, change).await?,
        };
        if let Some(job) = &changed {
            self.notifier.changed(job);
            observe(job, unreported_start);
            if job.state.is_terminal() {
                self.fair_share.ended(&job.tenant);
                self.remove_intermediates(job);
            }
        }
        Ok(changed)
    }

    /// Removes the images a job's routing slip handed on between workers, off the
    /// request path. Once the job has ended nobody reads them; a removal that fails is
    /// repeated when the job expires.
    fn remove_intermediates(&self, job: &Job) {
        let keys: Vec<String> = pixmill_shared::messages::handoffs(&job.steps)
            .into_iter()
            .map(|cursor| keys::intermediate(job.id, cursor))
            .collect();
        if keys.is_empty() {
            return;
        }
        let blobs = self.blobs.clone();
        tokio::spawn(async move {
            for key in keys {
                if let Err(e) = blobs.delete(&key).await {
                    warn!(key, error = %e, "could not remove a handed-on image; it goes when the job expires");
                }
            }
        });
    }
}

/// What `enqueue` did.
enum Enqueued {
    /// A new job, released to the broker or held.
    New(Admitted),
    /// An identical request with the same idempotency key won a race: its job.
    Replayed(Box<Job>),
}

/// The record of a job just accepted, as the store holds it (not read back).
fn accepted(
    tenant: &str,
    request: JobRequest,
    callback_url: Option<String>,
    admitted: Admitted,
) -> Job {
    let now = pixmill_shared::now_ms();
    Job {
        id: request.id,
        tenant: tenant.to_string(),
        state: JobState::Queued,
        steps: request.steps,
        variants: request.variants,
        format: request.format,
        quality: request.quality,
        input_key: request.input,
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        attempts: 0,
        worker: None,
        error: None,
        result: None,
        published_at: (admitted == Admitted::Released).then_some(now),
        republished: 0,
        result_deleted_at: None,
        callback: callback_url.map(|url| Callback {
            url,
            state: CallbackState::Pending,
            attempts: Vec::new(),
        }),
        hops: Vec::new(),
    }
}

/// Counts a change that applied: a first start (its queue wait) or a terminal state.
/// `unreported_start`: the job went from `queued` straight to its end, so this change
/// carries its first start too.
fn observe(job: &Job, unreported_start: bool) {
    let since_created = |at: Option<i64>| {
        at.and_then(|at| u64::try_from(at - job.created_at).ok())
            .map(Duration::from_millis)
    };
    if unreported_start
        && job.attempts <= 1
        && let Some(queue_wait) = since_created(job.started_at)
    {
        Event::JobStarted {
            job_id: job.id,
            queue_wait,
        }
        .emit();
    }
    match job.state {
        JobState::Running if job.attempts <= 1 => {
            if let Some(queue_wait) = since_created(job.started_at) {
                Event::JobStarted {
                    job_id: job.id,
                    queue_wait,
                }
                .emit();
            }
        }
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => Event::JobFinished {
            job_id: job.id,
            op: op_label(&job.steps),
            ops: &distinct_ops(job),
            outcome: job.state.as_str(),
            code: job.error.as_ref().map_or("", |e| e.code.as_str()),
            end_to_end: since_created(job.finished_at),
            processing: job
                .result
                .as_ref()
                .map(|r| Duration::from_millis(r.processing_ms)),
        }
        .emit(),
        _ => {}
    }
}

/// The ops of a job's steps, each once.
fn distinct_ops(job: &Job) -> Vec<&str> {
    let mut ops: Vec<&str> = Vec::with_capacity(job.steps.len());
    for step in &job.steps {
        if !ops.contains(&step.op()) {
            ops.push(step.op());
        }
    }
    ops
}

/// The 503 for a blob store that failed. The client learns what failed, not how: the
/// error names the store's endpoint, bucket and key, which stay in the log.
pub fn blob_unavailable(what: &str, e: &BlobError) -> ApiError {
    warn!(error = %e, "{what}: the blob store failed");
    ApiError::new(
        ApiCode::BlobStoreUnavailable,
        format!("{what}: the blob store is unavailable; retry shortly"),
    )
    .retry_after(2)
}

fn not_cancellable(id: Uuid) -> ApiError {
    ApiError::new(
        ApiCode::NotCancellable,
        format!("job {id} is already running and will finish; only queued jobs can be cancelled"),
    )
}

/// The error for a job whose blobs were removed after the retention period.
pub fn expired(id: Uuid) -> ApiError {
    ApiError::new(
        ApiCode::Expired,
        format!(
            "job {id} finished longer ago than the retention period (PIXMILL_RETENTION_SECS); its files are gone"
        ),
    )
}

/// Hash of everything that defines a request, for idempotency checks.
fn request_hash(submission: &Submission) -> String {
    let mut hasher = Sha256::new();
    hasher.update(&submission.image);
    for (k, v) in &submission.params {
        hasher.update((k.len() as u64).to_le_bytes());
        hasher.update(k.as_bytes());
        hasher.update((v.len() as u64).to_le_bytes());
        hasher.update(v.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Maps a failed publish to the answer the client gets.
pub fn publish_error(e: &PublishError) -> ApiError {
    match e {
        PublishError::Nacked => ApiError::new(
            ApiCode::QueueFull,
            "the job queue is full (PIXMILL_MAX_QUEUED jobs waiting); retry later",
        )
        .retry_after(5),
        other => ApiError::new(
            ApiCode::BrokerUnavailable,
            format!("the job could not be queued: {other}; retry shortly"),
        )
        .retry_after(2),
    }
}
