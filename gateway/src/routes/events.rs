//! `GET /v1/jobs/{id}/events`: a job's state changes as server-sent events.
//!
//! Each event is named after the state (`queued`, `running`, `succeeded`, …), carries
//! the job record (timestamps, attempts, worker, then the result or the error) as its
//! data, and has the job's `updated_at` (ms) as its id. The stream closes after a
//! terminal state. Comments (`: keep-alive`) go out every 15 s while nothing changes.
//!
//! A job only moves forward and its record holds everything about it, so a client that
//! reconnects with `Last-Event-ID` gets the current state if it changed since that id,
//! and never an event it already has; the terminal event is never missed. Changes
//! applied by any gateway arrive through the change-notice exchange.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures_util::{Stream, stream};
use uuid::Uuid;

use super::{AppState, Segment};
use crate::{
    error::ApiError,
    events::{Seen, Watch},
    jobs::Jobs,
    openapi::errors::EventsErrors,
    store::Job,
    view::{JobStreamEvent, view},
};

/// Comment lines keep proxies and clients from timing the stream out.
const HEARTBEAT: Duration = Duration::from_secs(15);

/// Where a stream is.
struct Cursor {
    jobs: Jobs,
    /// Whose jobs the stream's re-reads may see.
    scope: crate::store::Scope,
    /// The caller's tenant, which decides what the job record shows.
    viewer: String,
    id: Uuid,
    watch: Watch,
    /// The job as last read, not yet sent.
    pending: Option<Job>,
    /// `updated_at` of the last event sent (or the client's `Last-Event-ID`).
    last_sent: i64,
    done: bool,
}

/// A job's state changes as server-sent events.
///
/// Each event is named after the state (`queued`, `running`, `succeeded`, …), has the job
/// record as its data and the job's `updated_at` (ms) as its id. The stream closes after
/// a terminal state; `: keep-alive` comments go out every 15 s while nothing changes. A
/// client that reconnects with `Last-Event-ID` gets the current state if it changed since,
/// and never an event it already has.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(
        ("id" = uuid::Uuid, Path, description = "The job id"),
        ("Last-Event-ID" = Option<String>, Header, nullable = false, description = "The id of the last event received, when reconnecting"),
    ),
    responses(
        (
            status = 200, description = "An event stream; each event's data is the job record (`JobView`)",
            content_type = "text/event-stream", body = JobStreamEvent
        ),
        EventsErrors,
    )
)]
pub(super) async fn events(
    State(state): State<AppState>,
    principal: crate::auth::Principal,
    Segment(raw_id): Segment,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let jobs = state.jobs.clone();
    // Subscribe before the first read, so a change in between is not missed.
    let changes = jobs.notifier.events.subscribe();
    let scope = principal.scope();
    let job = jobs.get(&scope, &raw_id).await?;
    let last_sent = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(i64::MIN);
    let cursor = Cursor {
        jobs,
        scope,
        viewer: principal.tenant,
        id: job.id,
        watch: Watch::new(changes, job.id),
        pending: Some(job),
        last_sent,
        done: false,
    };
    let events = stream::unfold(cursor, |mut c| async move {
        loop {
            if c.done {
                return None;
            }
            if let Some(job) = c.pending.take() {
                let terminal = job.state.is_terminal();
                if job.updated_at > c.last_sent {
                    c.last_sent = job.updated_at;
                    c.done = terminal;
                    return Some((Ok(event(&job, &c.viewer)), c));
                }
                if terminal {
                    return None;
                }
            }
            c.pending = next_change(&mut c).await;
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(HEARTBEAT)))
}

/// Waits for a notice about this job (or the periodic re-read) and reads it again.
async fn next_change(c: &mut Cursor) -> Option<Job> {
    match c.watch.next().await {
        Seen::Job(job) => Some(Arc::unwrap_or_clone(job)),
        // A store that is briefly away costs a re-read later, not the stream.
        Seen::Reread => c.jobs.store.get(&c.scope, c.id).await.ok().flatten(),
        Seen::Closed => {
            c.done = true;
            None
        }
    }
}

fn event(job: &Job, viewer: &str) -> Event {
    Event::default()
        .event(job.state.as_str())
        .id(job.updated_at.to_string())
        .json_data(view(job, viewer))
        .unwrap_or_else(|_| Event::default().event(job.state.as_str()))
}
