//! `pixmill submit`: upload each file, optionally follow its job to the end and download
//! the result (or, with variants, every output), at most `--concurrency` files at a
//! time, then print one summary.

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
    /// Where the result was written; with variants, the first output.
    pub output: Option<PathBuf>,
    /// A job with variants, once it succeeded: every output, in the order asked for,
    /// and where each was written.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputFile>,
    /// Why the file did not get as far as asked.
    pub error: Option<Problem>,
    /// Wall time for this file: upload, processing and download.
    pub elapsed_ms: u64,
    #[serde(skip)]
    pub exit: Exit,
}

/// One output of a job with variants.
#[derive(Debug, Serialize)]
pub struct OutputFile {
    /// The variant's name.
    pub name: String,
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    pub bytes: u64,
    /// Where it was written; None when nothing was downloaded (no `-o`).
    pub path: Option<PathBuf>,
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
    /// The names of the variants asked for; empty for one result.
    variants: Vec<String>,
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
    let variants = submit.variants.names();
    let output = match inputs::plan(args.output.as_deref(), &files, &variants) {
        Ok(output) => output,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let mut fields = Vec::new();
    // With variants the shared steps may be none; then no `steps` is sent at all.
    if !submit.pipeline.is_empty() {
        fields.push(("steps".to_string(), submit.pipeline.to_field()));
    }
    if let Some(field) = submit
        .variants
        .to_field(args.fit.map(crate::args::Fit::as_str))
    {
        fields.push(("variants".to_string(), field));
    }
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
        variants,
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
        outputs: Vec::new(),
        error: None,
        elapsed_ms: 0,
        exit: Exit::Ok,
    };
    let outcome = follow(plan, &mut report, &bar).await;
    report.elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let name = report.file.display().to_string();
    match outcome {
        Ok(()) => {
            let more = match report.outputs.len() {
                0 | 1 => String::new(),
                n => format!(" (+{} more)", n - 1),
            };
            let done = match (&report.output, &report.job) {
                (Some(path), _) => format!(
                    "{} {} → {}{more}",
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
    if !plan.variants.is_empty() {
        return outputs(plan, &api, report, &job, bar).await;
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

/// The outputs of a succeeded job with variants: listed in the report, and each
/// downloaded to `<stem>-<name>.<ext>` when there is somewhere to write them.
async fn outputs(
    plan: &Plan,
    api: &Api,
    report: &mut FileReport,
    job: &Job,
    bar: &FileBar,
) -> Result<(), Stop> {
    let listed = job
        .result
        .as_ref()
        .map_or(&[][..], |r| r.outputs.as_slice());
    if listed.is_empty() {
        return Err(ApiError::Protocol {
            url: format!("/v1/jobs/{}", job.id),
            detail: format!(
                "the job succeeded without the outputs asked for ({}); the gateway may \
                 predate variants",
                plan.variants.join(", ")
            ),
        }
        .into());
    }
    for (i, meta) in listed.iter().enumerate() {
        let mut file = OutputFile {
            name: meta.name.clone(),
            content_type: meta.content_type.clone(),
            width: meta.width,
            height: meta.height,
            bytes: meta.bytes,
            path: None,
        };
        if plan.output != Output::None {
            bar.message(&format!(
                "downloading {} ({}/{})",
                meta.name,
                i + 1,
                listed.len()
            ));
            let input: &Path = &report.file;
            let downloaded = api
                .download_output(&job.id, &meta.name, |content_type| {
                    plan.output
                        .path_for_variant(input, &meta.name, content_type)
                        .unwrap_or_default()
                })
                .await?;
            if report.output.is_none() {
                report.output = Some(downloaded.path.clone());
            }
            file.bytes = downloaded.bytes;
            file.content_type = downloaded.content_type;
            file.path = Some(downloaded.path);
        }
        report.outputs.push(file);
    }
    Ok(())
}

fn record(report: &mut FileReport, job: &Job) {
    report.id = Some(job.id.clone());
    report.state = job.state.to_string();
    report.job = Some(job.clone());
}

/// The table and a count of outcomes.
fn summary(reports: &[FileReport]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    for r in reports {
        let mut row = vec![
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
        ];
        // A job with variants: a line per output, the first on the file's own line.
        for (i, o) in r.outputs.iter().enumerate() {
            let place = o
                .path
                .as_ref()
                .map_or_else(|| o.name.clone(), |p| p.display().to_string());
            if i == 0 {
                row[3] = format!("{}x{}", o.width, o.height);
                if r.error.is_none() {
                    row[5] = place;
                }
                rows.push(std::mem::take(&mut row));
            } else {
                let size = format!("{}x{}", o.width, o.height);
                rows.push(vec![
                    String::new(),
                    String::new(),
                    String::new(),
                    size,
                    String::new(),
                    place,
                ]);
            }
        }
        if !row.is_empty() {
            rows.push(row);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn report(file: &str, outputs: Vec<OutputFile>) -> FileReport {
        FileReport {
            file: PathBuf::from(file),
            id: Some("j1".into()),
            state: "succeeded".into(),
            job: None,
            output: outputs.first().and_then(|o| o.path.clone()),
            outputs,
            error: None,
            elapsed_ms: 1200,
            exit: Exit::Ok,
        }
    }

    fn output(name: &str, width: u32, path: Option<&str>) -> OutputFile {
        OutputFile {
            name: name.into(),
            content_type: "image/jpeg".into(),
            width,
            height: width / 2,
            bytes: 10,
            path: path.map(PathBuf::from),
        }
    }

    #[test]
    fn the_summary_has_a_line_per_output() {
        let text = summary(&[
            report(
                "a.jpg",
                vec![
                    output("w320", 320, Some("out/a-w320.jpg")),
                    output("w640", 640, Some("out/a-w640.jpg")),
                ],
            ),
            report("b.jpg", vec![output("w320", 320, None)]),
        ]);
        let lines = [
            "FILE   JOB  STATE      SIZE     TIME  OUTPUT / ERROR".to_string(),
            "a.jpg  j1   succeeded  320x160  1.2s  out/a-w320.jpg".into(),
            format!("{}640x320        out/a-w640.jpg", " ".repeat(23)),
            "b.jpg  j1   succeeded  320x160  1.2s  w320".into(),
            "2 files: 2 succeeded".into(),
        ];
        assert_eq!(text, lines.join("\n"));
        // Reported in JSON only for a job with variants.
        let json = serde_json::to_value(report("c.jpg", Vec::new())).expect("JSON");
        assert!(json.get("outputs").is_none(), "{json}");
        let json =
            serde_json::to_value(report("a.jpg", vec![output("w1", 1, Some("x"))])).expect("JSON");
        assert_eq!(json["outputs"][0]["path"], "x");
        assert_eq!(json["output"], "x");
    }
}
