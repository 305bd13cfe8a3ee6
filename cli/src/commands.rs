//! `status`, `get`, `list` and `cancel`: one request (or a few) each, printed as a
//! record, a table, or with `--json` the gateway's JSON itself.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::{
    api::{Api, ApiError, Job, MAX_WAIT, Page, State},
    args::{CancelArgs, GetArgs, ListArgs, StatusArgs},
    exit::Exit,
    report,
};

/// Prints an API error the way every command does, and gives its exit code.
fn fail(what: &str, e: &ApiError) -> Exit {
    eprintln!("error: {what}: {e}");
    e.exit()
}

fn print_json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => println!("{text}"),
        Err(e) => eprintln!("error: could not write JSON: {e}"),
    }
}

/// `status ID [--wait SECS]`. Without `--wait` any state is an answer (exit 0), except
/// `expired`, which the gateway answers with 410. With `--wait`, a job that ends
/// failed or cancelled exits 1, like `submit --wait`.
pub async fn status(api: &Api, json: bool, args: &StatusArgs) -> Exit {
    let job = match args.wait {
        None => api.status(&args.id, Duration::ZERO).await,
        Some(secs) => wait_up_to(api, &args.id, Duration::from_secs(secs)).await,
    };
    let job = match job {
        Ok(job) => job,
        Err(e) => return fail(&format!("job {}", args.id), &e),
    };
    if json {
        print_json(&job);
    } else {
        println!("{}", report::job(&job));
    }
    let ended_badly = matches!(job.state, State::Failed | State::Cancelled);
    if job.state == State::Expired || (args.wait.is_some() && ended_badly) {
        Exit::JobFailed
    } else {
        Exit::Ok
    }
}

/// Long-polls ([`MAX_WAIT`] per request at most) until the job ends or `limit` has passed.
async fn wait_up_to(api: &Api, id: &str, limit: Duration) -> Result<Job, ApiError> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let job = api.status(id, left.min(MAX_WAIT)).await?;
        if job.is_terminal() || left <= MAX_WAIT {
            return Ok(job);
        }
    }
}

/// `get ID -o FILE [--variant NAME]`.
pub async fn get(api: &Api, json: bool, args: &GetArgs) -> Exit {
    let done = match &args.variant {
        None => api.download(&args.id, |_| args.output.clone()).await,
        Some(name) => {
            api.download_output(&args.id, name, |_| args.output.clone())
                .await
        }
    };
    match done {
        Ok(done) => {
            if json {
                let mut record = json!({
                    "id": args.id,
                    "output": done.path,
                    "bytes": done.bytes,
                    "content_type": done.content_type,
                });
                if let Some(name) = &args.variant {
                    record["variant"] = json!(name);
                }
                print_json(&record);
            } else {
                println!(
                    "wrote {} ({}, {})",
                    done.path.display(),
                    indicatif::HumanBytes(done.bytes),
                    done.content_type
                );
            }
            Exit::Ok
        }
        Err(e) => fail(&format!("job {}", args.id), &e),
    }
}

/// `list [--state S] [--limit N] [--all] [--cursor C]`. `--limit` is the page size;
/// `--all` follows `next_cursor` until the gateway says there is no more.
pub async fn list(api: &Api, json: bool, args: &ListArgs) -> Exit {
    let mut all = Page {
        jobs: Vec::new(),
        next_cursor: args.cursor.clone(),
    };
    loop {
        let page = match api
            .list(args.state.as_ref(), args.limit, all.next_cursor.as_deref())
            .await
        {
            Ok(page) => page,
            Err(e) => return fail("listing jobs", &e),
        };
        all.jobs.extend(page.jobs);
        all.next_cursor = page.next_cursor;
        if !args.all || all.next_cursor.is_none() {
            break;
        }
    }
    if json {
        print_json(&all);
    } else {
        println!("{}", report::jobs(&all.jobs));
        if let Some(cursor) = &all.next_cursor {
            eprintln!("more jobs: pixmill list --cursor {cursor} (or --all)");
        }
    }
    Exit::Ok
}

/// `cancel ID`: a queued job is cancelled; a finished one loses its result and upload.
pub async fn cancel(api: &Api, json: bool, args: &CancelArgs) -> Exit {
    match api.cancel(&args.id).await {
        Ok(job) => {
            if json {
                print_json(&job);
            } else {
                println!("{}", report::job(&job));
            }
            Exit::Ok
        }
        Err(e) => fail(&format!("job {}", args.id), &e),
    }
}
