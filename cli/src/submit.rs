//! `pixmill submit`: upload each file, optionally follow its job to the end and download
//! the result, at most `--concurrency` files at a time, then print one summary.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use serde::Serialize;

use crate::{
    api::{Api, ApiError, Job, State},
    args::Submit,
    exit::Exit,
    inputs::{self, Output},
    progress::{Bars, FileBar},
    report,
};

/// How one file went: an element of `submit --json`'s array and a row of the table.
#[derive(Debug, Serialize)]
pub struct FileReport {
    /// The input, as given (after glob expansion).
    pub file: PathBuf,
    /// None when the gateway did not accept the upload.
    pub id: Option<String>,
    /// The job's last known state (its wire name), or `not_submitted`.
    pub state: String,
    /// The job's record as the gateway last gave it.
    pub job: Option<Job>,
    /// Where the result was written.
    pub output: Option<PathBuf>,
    /// Why the file did not get as far as asked.
    pub error: Option<Problem>,
    /// Wall time for this file: upload, processing and download.
    pub elapsed_ms: u64,
    #[serde(skip)]
    pub exit: Exit,
}

/// An error in a report: the gateway's code and message, or one of the client's own
/// (`unreachable`, `io_error`, `bad_answer`).
#[derive(Debug, Serialize)]
pub struct Problem {
    pub code: String,
    pub message: String,
    /// The HTTP status, when the gateway answered with an error.
    pub http_status: Option<u16>,
}

impl From<&ApiError> for Problem {
    fn from(e: &ApiError) -> Self {
        let message = match e {
            ApiError::Api { message, .. } => message.clone(),
            other => other.to_string(),
        };
        Self {
            code: e.code().to_string(),
            message,
            http_status: e.status(),
        }
    }
}

/// Why a file stopped short of what was asked: a refused or failed request, or a job
/// that ended other than `succeeded`.
struct Stop {
    problem: Problem,
    exit: Exit,
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Self {
            problem: Problem::from(&e),
            exit: e.exit(),
        }
    }
}

/// What every file's task shares.
struct Plan {
    api: Api,
    fields: Vec<(String, String)>,
    wait: bool,
    output: Output,
    bars: Bars,
}

/// Runs `submit`; returns the worst outcome of any file.
pub async fn run(api: &Api, json: bool, submit: Submit) -> Exit {
    let args = &submit.args;
    let files = match inputs::expand(&args.files) {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let output = match inputs::plan(args.output.as_deref(), &files) {
        Ok(output) => output,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let mut fields = vec![("steps".to_string(), submit.pipeline.to_field())];
    if let Some(format) = args.format {
        fields.push(("format".into(), format.as_str().into()));
    }
    if let Some(quality) = args.quality {
        fields.push(("quality".into(), quality.to_string()));
    }
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let plan = Arc::new(Plan {
        api: api.clone(),
        fields,
        // A result can only be downloaded once the job has finished.
        wait: args.wait || output != Output::None,
        output,
        bars: Bars::new(json, &names),
    });
    let bars: Vec<FileBar> = names.iter().map(|n| plan.bars.add(n)).collect();
    let mut reports: Vec<(usize, FileReport)> =
        futures_util::stream::iter(files.into_iter().zip(bars).enumerate())
            .map(|(index, (file, bar))| {
                let plan = plan.clone();
                async move { (index, one(&plan, file, bar).await) }
            })
            .buffer_unordered(usize::from(args.concurrency))
            .collect()
            .await;
    reports.sort_by_key(|(index, _)| *index);
    let reports: Vec<FileReport> = reports.into_iter().map(|(_, r)| r).collect();
    if json {
        match serde_json::to_string_pretty(&reports) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: could not write the JSON report: {e}"),
        }
    } else {
        println!("{}", summary(&reports));
    }
    reports.iter().map(|r| r.exit).max().unwrap_or(Exit::Ok)
}

/// One file, from upload to (optionally) its result on disk. Never fails: every outcome
/// is a report.
async fn one(plan: &Plan, file: PathBuf, bar: FileBar) -> FileReport {
    let started = Instant::now();
    let mut report = FileReport {
        file,
        id: None,
        state: "not_submitted".into(),
        job: None,
        output: None,
        error: None,
        elapsed_ms: 0,
        exit: Exit::Ok,
    };
    let outcome = follow(plan, &mut report, &bar).await;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let name = report.file.display().to_string();
    match outcome {
        Ok(()) => {
            let done = match (&report.output, &report.job) {
                (Some(path), _) => format!(
                    "{} {} → {}",
                    report.state,
                    report::size(report.job.as_ref()),
                    path.display()
                ),
                (None, Some(job)) if job.is_terminal() => {
                    format!("{} {} ({})", report.state, report::size(Some(job)), job.id)
                }
                _ => format!("{} ({})", report.state, report.id.as_deref().unwrap_or("-")),
            };
            bar.finish(true, &done);
        }
        Err(Stop { problem, exit }) => {
            let what = match &report.id {
                Some(id) => format!("{name}: job {id}"),
                None => name,
            };
            plan.bars.println(&format!(
                "error: {what}: {}: {}",
                problem.code, problem.message
            ));
            bar.finish(false, &format!("{}: {}", problem.code, problem.message));
            report.exit = exit;
            report.error = Some(problem);
        }
    }
    report
}

/// Upload, wait, download; a job that ends other than `succeeded` is an error.
async fn follow(plan: &Plan, report: &mut FileReport, bar: &FileBar) -> Result<(), Stop> {
    let len = std::fs::metadata(&report.file)
        .map_err(|e| ApiError::Local {
            path: report.file.display().to_string(),
            source: e,
        })?
        .len();
    bar.uploading(len);
    let notice_bar = bar.clone();
    let bars = plan.bars.clone();
    let name = report.file.display().to_string();
    let api = plan.api.with_notice(Arc::new(move |line: &str| {
        notice_bar.message(line);
        bars.println(&format!("{name}: {line}"));
    }));
    // One key per file per run: a retry of this upload finds the same job.
    let key = uuid::Uuid::new_v4().to_string();
    let job = api
        .submit(&report.file, &plan.fields, &key, bar.progress_fn())
        .await?;
    record(report, &job);
    bar.processing(job.state.as_str());
    if !plan.wait {
        return Ok(());
    }
    let job = api
        .wait(&job.id, &|j: &Job| bar.message(j.state.as_str()))
        .await?;
    record(report, &job);
    if job.state != State::Succeeded {
        let (code, message) = job.error.as_ref().map_or_else(
            || {
                (
                    job.state.to_string(),
                    format!("the job ended {}", job.state),
                )
            },
            |e| (e.code.clone(), e.message.clone()),
        );
        return Err(Stop {
            problem: Problem {
                code,
                message,
                http_status: None,
            },
            exit: Exit::JobFailed,
        });
    }
    if plan.output == Output::None {
        return Ok(());
    }
    bar.message("downloading");
    let input: &Path = &report.file;
    let downloaded = api
        .download(&job.id, |content_type| {
            plan.output
                .path_for(input, content_type)
                .unwrap_or_default()
        })
        .await?;
    report.output = Some(downloaded.path);
    Ok(())
}

fn record(report: &mut FileReport, job: &Job) {
    report.id = Some(job.id.clone());
    report.state = job.state.to_string();
    report.job = Some(job.clone());
}

/// The table and a count of outcomes.
fn summary(reports: &[FileReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            vec![
                r.file.display().to_string(),
                r.id.clone().unwrap_or_else(|| "-".into()),
                r.state.clone(),
                report::size(r.job.as_ref()),
                report::seconds(Duration::from_millis(r.elapsed_ms)),
                match (&r.output, &r.error) {
                    (_, Some(p)) => p.code.clone(),
                    (Some(path), None) => path.display().to_string(),
                    (None, None) => "-".into(),
                },
            ]
        })
        .collect();
    let mut counts: Vec<(String, usize)> = Vec::new();
    for r in reports {
        match counts.iter_mut().find(|(state, _)| *state == r.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((r.state.clone(), 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
    format!(
        "{}\n{} file{}: {}",
        report::table(
            &["FILE", "JOB", "STATE", "SIZE", "TIME", "OUTPUT / ERROR"],
            &rows
        ),
        reports.len(),
        if reports.len() == 1 { "" } else { "s" },
        counts.join(", ")
    )
}
