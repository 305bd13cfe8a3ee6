//! `pixmill`: the command-line client of a pixmill gateway.
//!
//! ```sh
//! pixmill submit photos/*.jpg --resize 320x200 --grayscale --wait -o thumbs/
//! pixmill submit photo.jpg --variant w320:320 --variant w640-webp:640:webp -o sizes/
//! pixmill status 4f40a890-… --wait 30
//! pixmill get 4f40a890-… -o result.jpg
//! pixmill list --state failed --all --json
//! pixmill cancel 4f40a890-…
//! ```
//!
//! The gateway is `--url`, else `PIXMILL_URL`, else `http://127.0.0.1:8080`. It speaks
//! only the public REST API, so it works against any gateway of a scaled-out install.
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | everything asked for was done (every job succeeded, when waiting) |
//! | 1 | a job failed or was cancelled, or the gateway refused a request for a job (a 4xx such as 422 `invalid_parameter`, 404, 409 `not_ready`, 410 `expired`) |
//! | 2 | usage error: a bad flag or value (clap's own errors), a missing input file, bad `--steps` JSON, a bad `WxH`, a bad `--variant` or `--variants` |
//! | 3 | the gateway is unreachable (connection refused, timeout), or still answers 503 or 429 after 3 tries honouring `Retry-After` (a 429 for the tenant's own limits is waited out, up to 10 minutes) |
//!
//! With several files the worst outcome wins, and 3 outranks 1: an unreachable gateway
//! says nothing about the jobs.
//!
//! # Layout
//!
//! - [`args`]: the clap definitions, and step flags put back in command-line order.
//! - [`steps`]: the steps as the gateway's `steps` JSON; parsers for `WxH`, `X,Y,W,H`.
//! - [`variants`]: `--variant` and `--variants` as the gateway's `variants` JSON.
//! - [`api`]: typed calls over the REST API and the one retry policy (503/429).
//! - [`inputs`]: glob expansion and where each result is written.
//! - [`submit`]: the submit command: concurrent uploads, waits, downloads, summary.
//! - [`commands`]: status, get, list, cancel.
//! - [`progress`], [`report`]: progress bars on stderr; tables and records on stdout.
//! - [`exit`]: the exit codes above.

pub mod api;
pub mod args;
pub mod commands;
pub mod exit;
pub mod inputs;
pub mod progress;
pub mod report;
pub mod steps;
pub mod submit;
pub mod variants;

use crate::{args::Command, args::Invocation, exit::Exit};

/// Runs a parsed command line to its exit code.
pub async fn run(invocation: Invocation) -> Exit {
    let api = match api::Api::new(&invocation.url, invocation.key.as_deref()) {
        Ok(api) => api,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let json = invocation.json;
    match invocation.command {
        Command::Submit(submit) => submit::run(&api, json, *submit).await,
        Command::Status(args) => commands::status(&api, json, &args).await,
        Command::Get(args) => commands::get(&api, json, &args).await,
        Command::List(args) => commands::list(&api, json, &args).await,
        Command::Cancel(args) => commands::cancel(&api, json, &args).await,
    }
}
