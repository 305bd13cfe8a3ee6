//! The contract between the `pixmill` client and the gateway, checked without a stack.
//!
//! The client keeps its own model of the API (`cli/src/api/model.rs`, `cli/src/steps.rs`)
//! because it must not depend on pixmill-shared. These tests keep the two models from
//! drifting apart:
//!
//! - the gateway's job records, made by the gateway's own code (`view` of a stored
//!   `Job`) in every state, go through the client's `Job` and `Page`, and the typed
//!   fields must carry the same values; error answers go through the client's reader;
//! - every step the client can build from its flags goes through the shared `Step`
//!   (what the gateway parses the `steps` field into) and back to the same JSON;
//! - the state names and the long-poll cap written on both sides agree.
//!
//! A field renamed on either side fails here: the client's typed fields are required,
//! the shared `Step` refuses unknown fields, and every record must come back whole.

use std::{collections::BTreeSet, time::Duration};

use clap::CommandFactory;
use pixmill_cli::{
    api::{self as cli, State as CliState},
    args::{self, Cli, Command},
    steps::{Pipeline, STEP_FLAGS, Step as CliStep},
};
use pixmill_gateway::{
    error::{ApiCode, ApiError, ErrorBody, ErrorDetail},
    jobs::MAX_WAIT_SECS,
    openapi::{errors::example_message, examples::sample_job},
    store::{Attempt, Callback, CallbackState, Job, JobError, JobState as State},
    view::{JobErrorView, JobList, JobView, view},
};
use pixmill_shared::{JobResult, Step};
use serde_json::Value;

// ---------------------------------------------------------------------------------
// The gateway's records through the client's types.
// ---------------------------------------------------------------------------------

fn result() -> JobResult {
    JobResult {
        key: "results/kept-private.webp".into(),
        content_type: "image/webp".into(),
        width: 1_920,
        height: 1_080,
        bytes: 5_000_000_123,
        processing_ms: 41,
        outputs: Vec::new(),
    }
}

fn callback() -> Callback {
    Callback {
        url: "https://hooks.example.com/pixmill".into(),
        state: CallbackState::Delivered,
        attempts: vec![
            Attempt {
                at_ms: 1_764_583_200_500,
                status: None,
                error: Some("connection refused".into()),
            },
            Attempt {
                at_ms: 1_764_583_201_500,
                status: Some(204),
                error: None,
            },
        ],
    }
}

/// Stored jobs in every state, each with and without a result, an error and a callback,
/// plus a succeeded job whose result was deleted.
fn stored_jobs() -> Vec<Job> {
    let mut jobs = Vec::new();
    for state in State::ALL {
        for with_result in [false, true] {
            for with_error in [false, true] {
                for with_callback in [false, true] {
                    let mut job = sample_job(state);
                    job.result = with_result.then(result);
                    job.error = with_error.then(|| JobError {
                        code: format!("{state}_code"),
                        message: format!("why the job is {state}"),
                    });
                    job.callback = with_callback.then(callback);
                    jobs.push(job);
                }
            }
        }
    }
    let mut deleted = sample_job(State::Succeeded);
    deleted.result = Some(result());
    deleted.result_deleted_at = Some(1_764_583_300_000);
    jobs.push(deleted);
    jobs
}

/// The gateway's record as JSON, and the client's reading of it.
fn through_client(record: &JobView) -> (Value, cli::Job) {
    let json = serde_json::to_string(record).expect("the gateway serializes its record");
    let job: cli::Job = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!(
            "the client cannot read the gateway's {} record: {e}\n{json}",
            record.state
        )
    });
    let value = serde_json::from_str(&json).expect("JSON");
    (value, job)
}

/// The client's typed fields hold what the gateway sent, and the record comes back
/// whole (`--json` prints it as it came).
fn assert_same_job(record: &JobView, value: &Value, job: &cli::Job) {
    let what = format!("{} record {value}", record.state);
    assert_eq!(job.id, record.id.to_string(), "id of the {what}");
    assert_eq!(
        job.state.as_str(),
        record.state.as_str(),
        "state of the {what}"
    );
    assert!(
        !matches!(job.state, CliState::Other(_)),
        "the client does not know the state of the {what}"
    );
    assert_eq!(
        job.is_terminal(),
        record.state.is_terminal(),
        "terminal or not, {what}"
    );
    assert_eq!(
        job.error
            .as_ref()
            .map(|e| (e.code.as_str(), e.message.as_str())),
        record
            .error
            .as_ref()
            .map(|e| (e.code.as_str(), e.message.as_str())),
        "error of the {what}"
    );
    assert_eq!(
        job.result
            .as_ref()
            .map(|r| (r.content_type.as_str(), r.width, r.height, r.bytes)),
        record
            .result
            .as_ref()
            .map(|r| (r.content_type.as_str(), r.width, r.height, r.bytes)),
        "result of the {what}"
    );
    assert_eq!(
        &serde_json::to_value(job).expect("the client serializes the record"),
        value,
        "the client did not keep the {what} whole"
    );
}

#[test]
fn the_client_reads_every_job_record_the_gateway_sends() {
    let mut states = BTreeSet::new();
    let (mut results, mut errors, mut callbacks) = (0, 0, 0);
    for stored in stored_jobs() {
        // As its own tenant sees it, and as an admin of another tenant does (without
        // the callback's URL).
        for viewer in [stored.tenant.as_str(), "ops"] {
            let record = view(&stored, viewer);
            let (value, job) = through_client(&record);
            assert_same_job(&record, &value, &job);
            states.insert(record.state.as_str());
            results += usize::from(record.result.is_some());
            errors += usize::from(record.error.is_some());
            callbacks += usize::from(record.callback.is_some());
        }
    }
    // Not vacuous: every state, and records with each optional part present.
    assert_eq!(states.len(), State::ALL.len(), "{states:?}");
    assert!(
        results > 0 && errors > 0 && callbacks > 0,
        "results {results}, errors {errors}, callbacks {callbacks}"
    );
}

/// `GET /v1/jobs`: a page with a cursor, the last page (null cursor), an empty page.
#[test]
fn the_client_reads_a_listing_page() {
    let records: Vec<JobView> = stored_jobs()
        .iter()
        .map(|job| view(job, &job.tenant))
        .collect();
    let pages = [
        JobList {
            jobs: records.clone(),
            next_cursor: Some(format!("1764583200123-{}", records[0].id)),
        },
        JobList {
            jobs: records[..3].to_vec(),
            next_cursor: None,
        },
        JobList {
            jobs: Vec::new(),
            next_cursor: None,
        },
    ];
    for list in pages {
        let json = serde_json::to_string(&list).expect("the gateway serializes its page");
        let page: cli::Page = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("the client cannot read the gateway's page: {e}"));
        assert_eq!(page.next_cursor, list.next_cursor, "next_cursor");
        assert_eq!(page.jobs.len(), list.jobs.len(), "jobs");
        for (record, job) in list.jobs.iter().zip(&page.jobs) {
            let value = serde_json::to_value(record).expect("JSON");
            assert_same_job(record, &value, job);
        }
        let value: Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(
            serde_json::to_value(&page).expect("the client serializes the page"),
            value,
            "the client did not keep the page whole"
        );
    }
}

/// The client reads `error.code` and `error.message` of every error answer.
#[test]
fn the_client_reads_every_error_code() {
    for code in ApiCode::ALL {
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message: example_message(code).into(),
            },
        };
        let json = serde_json::to_string(&body).expect("the gateway serializes its error");
        let read = cli::error_body(&json)
            .unwrap_or_else(|| panic!("the client cannot read the gateway's error {json}"));
        assert_eq!(
            (read.code.as_str(), read.message.as_str()),
            (body.error.code.as_str(), body.error.message.as_str()),
            "{json}"
        );
    }
}

async fn answer(error: ApiError) -> (u16, String) {
    let response = axum::response::IntoResponse::into_response(error);
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("the body");
    (
        status,
        String::from_utf8(body.to_vec()).expect("a UTF-8 body"),
    )
}

/// Error answers as the gateway's handlers send them, and the 410 that carries an
/// expired job's record (which the client reads as a job, state `expired`).
#[tokio::test]
async fn the_client_reads_the_gateways_error_answers() {
    let cases = [
        (ApiError::invalid("width must be 1 to 16384 (got 0)"), 422),
        (ApiError::not_found("nope"), 404),
        (ApiError::new(ApiCode::NotReady, "the job is running"), 409),
        (
            ApiError::new(ApiCode::BrokerUnavailable, "the broker is unavailable").retry_after(2),
            503,
        ),
        (ApiError::internal("a bug"), 500),
    ];
    for (error, status) in cases {
        let code = error.code().as_str();
        let (got_status, body) = answer(error).await;
        assert_eq!(got_status, status, "{body}");
        let read = cli::error_body(&body)
            .unwrap_or_else(|| panic!("the client cannot read the gateway's error {body}"));
        assert_eq!(read.code, code, "{body}");
        assert!(!read.message.is_empty(), "{body}");
    }

    let expired_job = sample_job(State::Expired);
    let mut expired = view(&expired_job, &expired_job.tenant);
    expired.error = Some(JobErrorView {
        code: ApiCode::Expired.as_str().into(),
        message: example_message(ApiCode::Expired).into(),
    });
    // The status handler answers an expired job with its record, not an error body.
    let body = serde_json::to_string(&expired).expect("the gateway serializes its record");
    let job: cli::Job = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the client cannot read the 410 record: {e}\n{body}"));
    let value: Value = serde_json::from_str(&body).expect("JSON");
    assert_same_job(&expired, &value, &job);
    assert_eq!(job.state, CliState::Expired);
}

// ---------------------------------------------------------------------------------
// The client's steps through the shared `Step`.
// ---------------------------------------------------------------------------------

/// Values for the step flags whose values are not a closed list. A new value-taking
/// step flag must be given samples here (the test says so).
fn samples(flag: &str) -> Option<&'static [&'static str]> {
    Some(match flag {
        "resize" => &["640x400", "640", "x400", "1", "16384x16384"],
        "crop" => &["0,0,800,600", "5,7,1,1"],
        "blur" => &["0.1", "2.5", "3", "50"],
        _ => return None,
    })
}

/// Every command line of step flags worth trying: each step flag with each value it
/// accepts (its closed list of values, or the samples above), `--fit` with each value
/// on a resize, and one pipeline of every flag at once.
fn step_command_lines() -> Vec<Vec<String>> {
    let command = Cli::command();
    let submit = command.find_subcommand("submit").expect("a submit command");
    let arg = |id: &str| {
        submit
            .get_arguments()
            .find(|a| a.get_id() == id)
            .unwrap_or_else(|| panic!("no --{id} flag"))
    };
    let mut lines: Vec<Vec<String>> = Vec::new();
    let mut everything: Vec<String> = Vec::new();
    for &flag in STEP_FLAGS {
        let arg = arg(flag);
        let takes_values = arg.get_num_args().is_none_or(|n| n.takes_values());
        let values: Vec<String> = if !takes_values {
            Vec::new()
        } else {
            let listed: Vec<String> = arg
                .get_possible_values()
                .iter()
                .map(|v| v.get_name().to_string())
                .collect();
            if listed.is_empty() {
                samples(flag)
                    .unwrap_or_else(|| panic!("give --{flag} sample values in samples()"))
                    .iter()
                    .map(|v| v.to_string())
                    .collect()
            } else {
                listed
            }
        };
        if values.is_empty() {
            lines.push(vec![format!("--{flag}")]);
            everything.push(format!("--{flag}"));
        }
        for value in &values {
            lines.push(vec![format!("--{flag}"), value.clone()]);
            everything.extend([format!("--{flag}"), value.clone()]);
        }
    }
    let fits = arg("fit").get_possible_values();
    assert!(!fits.is_empty(), "--fit lists its values");
    for fit in fits {
        lines.push(vec![
            "--resize".into(),
            "640x400".into(),
            "--resize".into(),
            "x10".into(),
            "--fit".into(),
            fit.get_name().into(),
        ]);
    }
    lines.push(everything);
    lines
}

/// The steps `pixmill submit a.jpg ARGS` sends.
fn pipeline_of(flags: &[String]) -> Pipeline {
    let mut argv: Vec<String> = vec!["pixmill".into(), "submit".into(), "a.jpg".into()];
    argv.extend_from_slice(flags);
    match args::parse(&argv) {
        Ok(invocation) => match invocation.command {
            Command::Submit(submit) => submit.pipeline,
            other => panic!("{argv:?} is not a submit: {other:?}"),
        },
        Err(e) => panic!("{argv:?} is refused: {e}"),
    }
}

/// Which step the client built, by an exhaustive match: a step added to the client
/// does not compile here until this test knows it.
fn variant(step: &CliStep) -> usize {
    match step {
        CliStep::Resize { .. } => 0,
        CliStep::Crop { .. } => 1,
        CliStep::Blur { .. } => 2,
        CliStep::Edges => 3,
        CliStep::Swap => 4,
        CliStep::Grayscale => 5,
        CliStep::Rotate { .. } => 6,
        CliStep::Flip { .. } => 7,
    }
}
const VARIANTS: usize = 8;

/// The `steps` field as the gateway reads it, and written back as the gateway would.
fn through_shared(field: &str) -> (Vec<Step>, Value) {
    let steps: Vec<Step> = serde_json::from_str(field)
        .unwrap_or_else(|e| panic!("the gateway refuses the client's steps {field}: {e}"));
    // As text, the way it travels: an f32 sigma of 0.1 stays 0.1.
    let text = serde_json::to_string(&steps).expect("the shared steps serialize");
    (steps, serde_json::from_str(&text).expect("JSON"))
}

#[test]
fn every_step_the_client_builds_is_a_shared_step() {
    let mut seen = [false; VARIANTS];
    let mut ops = BTreeSet::new();
    for flags in step_command_lines() {
        let pipeline = pipeline_of(&flags);
        let Pipeline::Flags(built) = &pipeline else {
            panic!("{flags:?} did not give flag steps: {pipeline:?}");
        };
        for step in built {
            seen[variant(step)] = true;
        }
        let field = pipeline.to_field();
        let sent: Value = serde_json::from_str(&field).expect("the client sends JSON");
        let sent = sent.as_array().expect("a steps array");
        let (steps, back) = through_shared(&field);
        let back = back.as_array().expect("a steps array");
        assert_eq!(steps.len(), built.len(), "{flags:?}: {field}");
        assert_eq!(back.len(), sent.len(), "{flags:?}: {field}");
        for ((step, sent), back) in steps.iter().zip(sent).zip(back) {
            ops.insert(step.op());
            // Every field the client sends comes back with its value: none was renamed,
            // dropped or read as something else. The gateway may add its defaults.
            let sent = sent.as_object().expect("a step object");
            for (key, value) in sent {
                assert_eq!(
                    back.get(key),
                    Some(value),
                    "{flags:?}: the client sends {key}={value} in {field}, the gateway reads {back}"
                );
            }
            // And what the gateway writes back reads as the same step.
            let again: Step = serde_json::from_value(back.clone()).expect("reads back");
            assert_eq!(&again, step, "{flags:?}: {back}");
        }
    }
    assert!(
        seen.iter().all(|s| *s),
        "some step the client can build was never tried: {seen:?}"
    );
    for op in &ops {
        assert!(Step::OPS.contains(op), "{op} is not a shared op");
    }
}

/// The client's steps as constructed in code, including the options no flag combination
/// above leaves out.
#[test]
fn client_steps_serialize_to_shared_steps() {
    let built = vec![
        CliStep::Resize {
            width: Some(320),
            height: None,
            fit: None,
        },
        CliStep::Resize {
            width: None,
            height: Some(200),
            fit: Some("fill".into()),
        },
        CliStep::Crop {
            x: 1,
            y: 2,
            width: 3,
            height: 4,
        },
        CliStep::Blur { sigma: 0.3 },
        CliStep::Edges,
        CliStep::Swap,
        CliStep::Grayscale,
        CliStep::Rotate { degrees: 270 },
        CliStep::Flip {
            direction: "horizontal".into(),
        },
    ];
    let field = Pipeline::Flags(built.clone()).to_field();
    let sent: Value = serde_json::from_str(&field).expect("JSON");
    let (steps, back) = through_shared(&field);
    assert_eq!(steps.len(), built.len());
    for (sent, back) in sent
        .as_array()
        .into_iter()
        .flatten()
        .zip(back.as_array().into_iter().flatten())
    {
        for (key, value) in sent.as_object().into_iter().flatten() {
            assert_eq!(back.get(key), Some(value), "{key} in {field}; back: {back}");
        }
    }
}

// ---------------------------------------------------------------------------------
// Names and limits written on both sides.
// ---------------------------------------------------------------------------------

/// The client knows exactly the gateway's states, by the same names, and agrees on
/// which are terminal; `list --state` takes each of them.
#[test]
fn the_client_knows_exactly_the_gateways_states() {
    for state in State::ALL {
        let name = serde_json::to_value(state).expect("the wire name");
        let read: CliState = serde_json::from_value(name.clone()).expect("a state");
        assert!(
            !matches!(read, CliState::Other(_)),
            "the client does not know the gateway's state {name}"
        );
        assert_eq!(read.as_str(), state.as_str());
        assert_eq!(
            serde_json::to_value(&read).expect("the client's wire name"),
            name
        );
        assert_eq!(read.is_terminal(), state.is_terminal(), "{name}");
        list_takes_state(state.as_str());
    }
    for known in CliState::KNOWN {
        let name = serde_json::to_value(&known).expect("the client's wire name");
        let read: State = serde_json::from_value(name.clone())
            .unwrap_or_else(|e| panic!("the gateway has no state {name}: {e}"));
        assert_eq!(read.as_str(), known.as_str());
        assert_eq!(read.is_terminal(), known.is_terminal(), "{name}");
    }
    assert_eq!(CliState::KNOWN.len(), State::ALL.len());
}

/// `pixmill list --state NAME` is accepted and asks for that state.
fn list_takes_state(name: &str) {
    let invocation =
        args::parse(["pixmill", "list", "--state", name]).unwrap_or_else(|e| panic!("{name}: {e}"));
    let Command::List(list) = invocation.command else {
        panic!("not a list")
    };
    assert_eq!(list.state.as_ref().map(CliState::as_str), Some(name));
}

#[test]
fn the_long_poll_caps_agree() {
    assert_eq!(
        cli::MAX_WAIT,
        Duration::from_secs(MAX_WAIT_SECS),
        "the client's longest long-poll is not the gateway's"
    );
}
