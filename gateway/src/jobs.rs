//! The jobs service: accepting a job, looking it up, waiting on it, fetching its result.
//!
//! Accepting follows one order, so nothing is lost or left behind: validate everything,
//! store the input blob, record the task as `queued`, publish with a confirm, and only
//! then answer 202. If the publish fails the task and blob are removed again and the
//! client gets a 503 telling it to retry.

use std::{sync::Arc, time::Duration};

use pixmill_shared::{BlobStore, JobRequest, Limits, PlanError, amqp::PublishError, plan};
use tracing::{info, warn};
use uuid::Uuid;

use crate::{
    error::ApiError,
    inspect::inspect,
    publisher::Publisher,
    replies::JobEvents,
    store::{Job, NewJob, TaskStore},
    upload::{Submission, job_spec},
};

/// Shared state behind every route.
#[derive(Debug, Clone)]
pub struct Jobs {
    pub store: TaskStore,
    pub blobs: BlobStore,
    pub publisher: Arc<Publisher>,
    pub events: JobEvents,
    pub limits: Limits,
}

impl Jobs {
    /// Validates and queues a submission; returns the new job once the broker has it.
    pub async fn submit(&self, submission: Submission) -> Result<Job, ApiError> {
        let spec = job_spec(&submission.params)?;
        let image = inspect(&submission.image, &self.limits)?;
        plan(&spec.steps, image.width, image.height, &self.limits).map_err(|e| match e {
            PlanError::TooManyPixels { .. } => ApiError::Unprocessable {
                code: "too_many_pixels",
                message: format!("{e} (PIXMILL_MAX_PIXELS)"),
            },
            PlanError::TooManySteps { .. } => ApiError::Unprocessable {
                code: "too_many_steps",
                message: format!("{e} (PIXMILL_MAX_STEPS)"),
            },
            PlanError::InvalidStep { .. } => ApiError::invalid(e.to_string()),
        })?;

        let id = Uuid::new_v4();
        let request = JobRequest {
            id,
            input: BlobStore::input_key(id),
            steps: spec.steps,
            format: spec.format.unwrap_or_else(|| image.default_output()),
            quality: spec.quality,
        };
        self.blobs
            .put(&request.input, &submission.image)
            .await
            .map_err(|e| ApiError::Unavailable {
                code: "blob_store_unavailable",
                message: format!("the upload could not be stored: {e}"),
                retry_after_secs: 2,
            })?;
        let stored = self
            .store
            .insert(NewJob {
                id,
                steps: request.steps.clone(),
                format: request.format,
                quality: request.quality,
                input_key: request.input.clone(),
            })
            .await;
        if let Err(e) = stored {
            let _ = self.blobs.delete(&request.input).await;
            return Err(e.into());
        }
        if let Err(e) = self.publisher.publish(&request).await {
            warn!(job_id = %id, error = %e, "publish failed; the job is withdrawn");
            let _ = self.store.delete(id).await;
            let _ = self.blobs.delete(&request.input).await;
            return Err(publish_error(&e));
        }
        info!(job_id = %id, steps = request.steps.len(), width = image.width, height = image.height, "job queued");
        self.store
            .get(id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("job {id} vanished after insert")))
    }

    /// Looks a job up by the id as given in the URL (404 for anything malformed).
    pub async fn get(&self, raw_id: &str) -> Result<Job, ApiError> {
        let id = Uuid::parse_str(raw_id).map_err(|_| ApiError::NotFound(raw_id.into()))?;
        self.store
            .get(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(raw_id.into()))
    }

    /// Returns the job once it is terminal, or its current state when `wait` runs out.
    pub async fn wait(&self, raw_id: &str, wait: Duration) -> Result<Job, ApiError> {
        // Subscribe before the first read, so a change in between is not missed.
        let mut changes = self.events.subscribe();
        let job = self.get(raw_id).await?;
        if job.state.is_terminal() || wait.is_zero() {
            return Ok(job);
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return self.get(raw_id).await,
                changed = changes.recv() => {
                    let relevant = match changed {
                        Ok(changed) => changed == job.id,
                        Err(_) => true, // lagged or closed: re-read to be safe
                    };
                    if relevant {
                        let now = self.get(raw_id).await?;
                        if now.state.is_terminal() {
                            return Ok(now);
                        }
                    }
                }
            }
        }
    }
}

fn publish_error(e: &PublishError) -> ApiError {
    match e {
        PublishError::Nacked => ApiError::Unavailable {
            code: "queue_full",
            message: "the job queue is full (PIXMILL_MAX_QUEUED); retry later".into(),
            retry_after_secs: 5,
        },
        other => ApiError::Unavailable {
            code: "broker_unavailable",
            message: format!("the job could not be queued: {other}; retry shortly"),
            retry_after_secs: 2,
        },
    }
}
