//! The command line, as clap derive structs, and the one place that turns `argv` into a
//! [`Command`] (with the step flags put back in command-line order).

use std::path::PathBuf;

use clap::{
    ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum,
    builder::{PossibleValue, PossibleValuesParser, TypedValueParser},
};

use crate::{
    api::State,
    steps::{self, Format, Pipeline, RawSteps, Rect, Size},
    variants::{self, RawVariants, VariantSpec, Variants},
};

/// Shown under `pixmill --help`; the crate doc says the same.
const EXIT_CODES: &str = "\
Exit codes:
  0  everything asked for was done (every job succeeded, when waiting)
  1  a job failed or was cancelled, or the gateway refused a request for a job
     (4xx, e.g. 422 invalid_parameter, 404 not_found, 409 not_ready, 410 expired)
  2  usage error: a bad flag or value, a missing input file, bad --steps JSON,
     a bad --variant or --variants
  3  the gateway is unreachable (connection refused, timeout), or still answers
     503/429 after 3 tries honouring Retry-After (a 429 for the tenant's own rate
     or in-flight quota is waited out, up to 10 minutes per request)";

/// pixmill: submit images to a pixmill gateway, follow the jobs, download the results.
#[derive(Debug, Parser)]
#[command(name = "pixmill", version, after_help = EXIT_CODES, propagate_version = true)]
pub struct Cli {
    /// The gateway's base URL.
    #[arg(
        long,
        global = true,
        env = "PIXMILL_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL",
        value_parser = parse_url
    )]
    pub url: String,

    /// The API key, sent as `Authorization: Bearer KEY` (a gateway with
    /// PIXMILL_AUTH=required needs one; `pixmill-gateway keys create` makes them).
    #[arg(
        long,
        global = true,
        env = "PIXMILL_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key: Option<String>,

    /// Machine-readable output: one JSON document on stdout, no progress bars.
    /// Errors still go to stderr.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: CommandArgs,
}

#[derive(Debug, Subcommand)]
pub enum CommandArgs {
    /// Upload images and apply steps; with --wait, follow each job to its end.
    #[command(after_help = EXIT_CODES)]
    Submit(Box<SubmitArgs>),
    /// Show a job's record.
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),
    /// Download a finished job's result (following a redirect to the object store).
    #[command(after_help = EXIT_CODES)]
    Get(GetArgs),
    /// List jobs, newest first.
    #[command(after_help = EXIT_CODES)]
    List(ListArgs),
    /// Cancel a queued job, or delete a finished job's result and upload.
    #[command(after_help = EXIT_CODES)]
    Cancel(CancelArgs),
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// Images to upload (JPEG, PNG, WebP, GIF). Patterns such as 'photos/*.jpg' are
    /// expanded here when the shell did not.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<String>,

    /// Scale to WxH, W (height keeps the aspect ratio) or xH.
    #[arg(long, value_name = "WxH", value_parser = steps::parse_size, help_heading = STEPS)]
    pub resize: Vec<Size>,
    /// Cut out the rectangle at X,Y of size W×H.
    #[arg(long, value_name = "X,Y,W,H", value_parser = steps::parse_rect, help_heading = STEPS)]
    pub crop: Vec<Rect>,
    /// Gaussian blur of standard deviation SIGMA pixels (0.1–50).
    #[arg(long, value_name = "SIGMA", value_parser = steps::parse_sigma, help_heading = STEPS)]
    pub blur: Vec<f32>,
    // The plain step flags are value-less `Append`s rather than `Count`s: a count keeps
    // one position however often the flag is given, which would lose `--swap … --swap`.
    /// Canny edge detection (a one-channel edge map).
    #[arg(long, help_heading = STEPS, action = ArgAction::Append, num_args = 0,
          default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub edges: Vec<bool>,
    /// Swap the red and blue channels.
    #[arg(long, help_heading = STEPS, action = ArgAction::Append, num_args = 0,
          default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub swap: Vec<bool>,
    /// Convert to grayscale.
    #[arg(long, help_heading = STEPS, action = ArgAction::Append, num_args = 0,
          default_missing_value = "true", value_parser = clap::value_parser!(bool))]
    pub grayscale: Vec<bool>,
    /// Rotate clockwise.
    #[arg(long, value_name = "DEGREES", help_heading = STEPS,
          value_parser = PossibleValuesParser::new(["90", "180", "270"])
              .map(|d| d.parse::<u16>().unwrap_or_default()))]
    pub rotate: Vec<u16>,
    /// Mirror the image.
    #[arg(long, value_name = "DIRECTION", value_parser = ["horizontal", "vertical"], help_heading = STEPS)]
    pub flip: Vec<String>,
    /// How every --resize treats a box of another aspect ratio (gateway default: cover,
    /// exactly WxH, cropping the overflow).
    #[arg(long, value_enum, help_heading = STEPS)]
    pub fit: Option<Fit>,
    /// The whole pipeline as a JSON array, passed through as is, e.g.
    /// '[{"op":"resize","width":640},{"op":"swap","order":"rbg"}]'.
    #[arg(long, value_name = "JSON", value_parser = steps::parse_raw_steps,
          conflicts_with_all = steps::STEP_FLAGS, help_heading = STEPS)]
    pub steps: Option<RawSteps>,

    /// A named output of its own (repeatable, at most 8), made from the same upload
    /// after the steps above: NAME:SIZE[:FORMAT[:QUALITY]], a resize in the --resize
    /// syntax (w320:320, w640-webp:640:webp:80), or NAME=STEPS_JSON, the variant's own
    /// steps ('thumb=[{"op":"resize","width":160}]'). With variants the steps above are
    /// optional; FORMAT and QUALITY default to --format and --quality.
    #[arg(long, value_name = "SPEC", value_parser = variants::parse_variant,
          help_heading = VARIANTS)]
    pub variant: Vec<VariantSpec>,
    /// Every variant as a JSON array, passed through as is, e.g.
    /// '[{"name":"w320","steps":[{"op":"resize","width":320}],"format":"webp"}]'.
    #[arg(long, value_name = "JSON", value_parser = variants::parse_raw_variants,
          conflicts_with = "variant", help_heading = VARIANTS)]
    pub variants: Option<RawVariants>,

    /// Output format (default: the input's; GIF gives PNG).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// JPEG quality.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=100))]
    pub quality: Option<u8>,
    /// Wait for each job to finish (long-polling) and report how it ended.
    #[arg(long)]
    pub wait: bool,
    /// Where to write results (implies --wait): a file for one input, or a directory
    /// (when it ends in '/', exists, or there are several inputs) that receives
    /// <input stem>.<result extension>. With variants, every output is written, as
    /// <stem>-<variant name>.<extension> beside that file or in that directory.
    #[arg(short, long, value_name = "OUT")]
    pub output: Option<PathBuf>,
    /// Jobs in flight at once.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub concurrency: u16,
}

const STEPS: &str = "Steps (applied in the order given)";
const VARIANTS: &str = "Variants (several outputs of one upload)";

/// An `http://` or `https://` base URL; a typo here is a usage error (2), not an
/// unreachable gateway (3).
fn parse_url(text: &str) -> Result<String, String> {
    let url =
        reqwest::Url::parse(text.trim()).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("{text:?} is not an http:// or https:// URL"));
    }
    Ok(text.trim().trim_end_matches('/').to_string())
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Fit {
    Cover,
    Contain,
    Fill,
}

impl Fit {
    pub fn as_str(self) -> &'static str {
        match self {
            Fit::Cover => "cover",
            Fit::Contain => "contain",
            Fit::Fill => "fill",
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The job id.
    pub id: String,
    /// Wait up to SECS for the job to finish (long-polling, 30 s per request).
    #[arg(long, value_name = "SECS")]
    pub wait: Option<u64>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The job id.
    pub id: String,
    /// The file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Of a job with variants, the output of this name (default: the first).
    #[arg(long, value_name = "NAME", value_parser = parse_variant_name)]
    pub variant: Option<String>,
}

fn parse_variant_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if variants::valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{text:?} is not a variant name: 1 to 40 lower-case letters, digits, '_' and '-'"
        ))
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only jobs in this state.
    #[arg(long, value_enum)]
    pub state: Option<State>,
    /// Jobs per page (1–200).
    #[arg(long, value_name = "N", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=200))]
    pub limit: u32,
    /// Follow next_cursor until every job has been listed.
    #[arg(long)]
    pub all: bool,
    /// Start after this cursor (a next_cursor from an earlier page).
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
}

/// `--state` takes the states this client knows, by their wire names.
static KNOWN_STATES: [State; 6] = State::KNOWN;

impl ValueEnum for State {
    fn value_variants<'a>() -> &'a [Self] {
        &KNOWN_STATES
    }

    /// Each known state's name (borrowed from the static list, as clap wants a
    /// `&'static str`); none for [`State::Other`].
    fn to_possible_value(&self) -> Option<PossibleValue> {
        let known: &'static State = KNOWN_STATES.iter().find(|known| *known == self)?;
        Some(PossibleValue::new(known.as_str()))
    }
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The job id.
    pub id: String,
}

/// What `submit` needs beyond its flags: the steps, in command-line order, and the
/// variants.
#[derive(Debug)]
pub struct Submit {
    pub args: SubmitArgs,
    /// The steps of the job; with variants, the steps every variant shares (maybe none).
    pub pipeline: Pipeline,
    pub variants: Variants,
}

/// A parsed command line.
#[derive(Debug)]
pub enum Command {
    Submit(Box<Submit>),
    Status(StatusArgs),
    Get(GetArgs),
    List(ListArgs),
    Cancel(CancelArgs),
}

/// The parsed command line plus the options every command shares.
#[derive(Debug)]
pub struct Invocation {
    pub url: String,
    /// `--key` / `PIXMILL_API_KEY`, when given.
    pub key: Option<String>,
    pub json: bool,
    pub command: Command,
}

/// Parses `argv`. A `clap::Error` carries its own exit code (2 for usage, 0 for
/// `--help`), which `main` uses through `Error::exit`.
pub fn parse<I, T>(argv: I) -> Result<Invocation, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = Cli::command().try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    let command = match cli.command {
        CommandArgs::Submit(args) => {
            let pipeline = match &args.steps {
                Some(raw) => Pipeline::Json(raw.clone()),
                None => {
                    let sub = matches.subcommand_matches("submit").ok_or_else(|| {
                        clap::Error::new(clap::error::ErrorKind::MissingSubcommand)
                    })?;
                    Pipeline::Flags(steps::ordered(sub, args.fit.map(Fit::as_str)))
                }
            };
            let variants = match (&args.variants, args.variant.as_slice()) {
                (Some(raw), _) => Variants::Json(raw.clone()),
                (None, []) => Variants::None,
                (None, specs) => {
                    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
                    variants::check_names(&names).map_err(|e| {
                        Cli::command().error(clap::error::ErrorKind::ValueValidation, e)
                    })?;
                    Variants::Specs(specs.to_vec())
                }
            };
            if pipeline.is_empty() && variants.is_empty() {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "give at least one step (--resize, --crop, --blur, --edges, --swap, \
                     --grayscale, --rotate, --flip), --steps JSON, or --variant",
                ));
            }
            Command::Submit(Box::new(Submit {
                args: *args,
                pipeline,
                variants,
            }))
        }
        CommandArgs::Status(a) => Command::Status(a),
        CommandArgs::Get(a) => Command::Get(a),
        CommandArgs::List(a) => Command::List(a),
        CommandArgs::Cancel(a) => Command::Cancel(a),
    };
    Ok(Invocation {
        url: cli.url.trim_end_matches('/').to_string(),
        key: cli
            .key
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty()),
        json: cli.json,
        command,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::steps::Step;

    #[test]
    fn the_key_is_taken_from_the_flag_anywhere() {
        let parsed = parse(["pixmill", "list", "--key", " pmk_abc "]).expect("parses");
        assert_eq!(parsed.key.as_deref(), Some("pmk_abc"));
        let parsed = parse(["pixmill", "--key", "pmk_x", "status", "id"]).expect("parses");
        assert_eq!(parsed.key.as_deref(), Some("pmk_x"));
    }

    fn steps_of(argv: &[&str]) -> Vec<Step> {
        let mut full = vec!["pixmill", "submit", "a.jpg"];
        full.extend_from_slice(argv);
        match parse(full).expect("parses").command {
            Command::Submit(submit) => match submit.pipeline {
                Pipeline::Flags(steps) => steps,
                other => panic!("not flag steps: {other:?}"),
            },
            other => panic!("not flag steps: {other:?}"),
        }
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn step_flags_keep_their_command_line_order() {
        let resize = Step::Resize {
            width: Some(10),
            height: Some(10),
            fit: None,
        };
        assert_eq!(
            steps_of(&["--blur", "2", "--resize", "10x10"]),
            vec![Step::Blur { sigma: 2.0 }, resize.clone()]
        );
        assert_eq!(
            steps_of(&["--resize=10x10", "--blur=2"]),
            vec![resize.clone(), Step::Blur { sigma: 2.0 }]
        );
        assert_eq!(
            steps_of(&[
                "--swap",
                "--rotate",
                "90",
                "--grayscale",
                "--swap",
                "--resize",
                "10x10",
                "--edges",
                "--flip",
                "vertical",
                "--crop",
                "0,0,5,5",
            ]),
            vec![
                Step::Swap,
                Step::Rotate { degrees: 90 },
                Step::Grayscale {},
                Step::Swap,
                resize,
                Step::Edges,
                Step::Flip {
                    direction: "vertical".into()
                },
                Step::Crop {
                    x: 0,
                    y: 0,
                    width: 5,
                    height: 5
                },
            ]
        );
    }

    #[test]
    fn files_and_steps_may_interleave() {
        let parsed = parse([
            "pixmill",
            "submit",
            "--grayscale",
            "a.jpg",
            "--swap",
            "b.jpg",
        ])
        .expect("parses");
        let Command::Submit(submit) = parsed.command else {
            panic!("submit")
        };
        assert_eq!(submit.args.files, ["a.jpg", "b.jpg"]);
        assert_eq!(
            submit.pipeline,
            Pipeline::Flags(vec![Step::Grayscale {}, Step::Swap])
        );
    }

    #[test]
    fn fit_applies_to_every_resize() {
        let steps = steps_of(&["--resize", "10", "--fit", "contain", "--resize", "x5"]);
        assert!(
            steps
                .iter()
                .all(|s| matches!(s, Step::Resize { fit: Some(f), .. } if f == "contain"))
        );
    }

    fn submit_of(argv: &[&str]) -> Submit {
        let mut full = vec!["pixmill", "submit", "a.jpg"];
        full.extend_from_slice(argv);
        match parse(full).expect("parses").command {
            Command::Submit(submit) => *submit,
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn variants_need_no_shared_steps_and_keep_their_order() {
        let submit = submit_of(&[
            "--variant",
            "w640-webp:640:webp:80",
            "--variant",
            r#"gray=[{"op":"grayscale"}]"#,
            "--variant",
            "w320:320",
        ]);
        assert!(submit.pipeline.is_empty());
        assert_eq!(submit.variants.names(), ["w640-webp", "gray", "w320"]);
        let field: serde_json::Value =
            serde_json::from_str(&submit.variants.to_field(None).expect("a field")).expect("JSON");
        assert_eq!(
            field,
            serde_json::json!([
                {"name": "w640-webp", "steps": [{"op": "resize", "width": 640}],
                 "format": "webp", "quality": 80},
                {"name": "gray", "steps": [{"op": "grayscale"}]},
                {"name": "w320", "steps": [{"op": "resize", "width": 320}]}
            ])
        );
        // Step flags stay the shared steps.
        let shared = submit_of(&["--grayscale", "--variant", "w320:320"]);
        assert_eq!(shared.pipeline, Pipeline::Flags(vec![Step::Grayscale {}]));
        assert_eq!(shared.variants.names(), ["w320"]);
        let raw = submit_of(&["--variants", r#"[{"name":"a"},{"name":"b"}]"#]);
        assert_eq!(raw.variants.names(), ["a", "b"]);
        // Without variants nothing changes.
        assert_eq!(submit_of(&["--swap"]).variants, Variants::None);
    }

    #[test]
    fn get_takes_a_variant_name() {
        let parsed =
            parse(["pixmill", "get", "id", "-o", "x.jpg", "--variant", "w320"]).expect("parses");
        let Command::Get(get) = parsed.command else {
            panic!("get")
        };
        assert_eq!(get.variant.as_deref(), Some("w320"));
        let err = parse(["pixmill", "get", "id", "-o", "x.jpg", "--variant", "W 1"])
            .expect_err("a bad name");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn bad_variants_exit_2() {
        let nine: Vec<String> = (0..9).map(|i| format!("v{i}:{}", 100 + i)).collect();
        let mut too_many = vec!["pixmill", "submit", "a.jpg"];
        for spec in &nine {
            too_many.extend(["--variant", spec.as_str()]);
        }
        let bad: &[&[&str]] = &[
            &["pixmill", "submit", "a.jpg", "--variant", "w320"],
            &["pixmill", "submit", "a.jpg", "--variant", "W320:320"],
            &["pixmill", "submit", "a.jpg", "--variant", "w:320:gif"],
            &["pixmill", "submit", "a.jpg", "--variant", "w:320:jpeg:0"],
            &["pixmill", "submit", "a.jpg", "--variant", "w=[{"],
            &[
                "pixmill",
                "submit",
                "a.jpg",
                "--variant",
                "a:10",
                "--variant",
                "a:20",
            ],
            &[
                "pixmill",
                "submit",
                "a.jpg",
                "--variant",
                "a:10",
                "--variants",
                r#"[{"name":"b"}]"#,
            ],
            &[
                "pixmill",
                "submit",
                "a.jpg",
                "--variants",
                r#"{"name":"b"}"#,
            ],
            &[
                "pixmill",
                "submit",
                "a.jpg",
                "--variants",
                r#"[{"name":"b"},{"name":"b"}]"#,
            ],
            &["pixmill", "submit", "a.jpg", "--variants", "[]"],
            &too_many,
        ];
        for argv in bad {
            let err = parse(*argv).expect_err("usage error");
            assert_eq!(err.exit_code(), 2, "{argv:?}: {err}");
        }
        let err = parse([
            "pixmill",
            "submit",
            "a.jpg",
            "--variant",
            "a:10",
            "--variant",
            "a:20",
        ])
        .expect_err("twice");
        assert!(err.to_string().contains("used twice"), "{err}");
    }

    #[test]
    fn usage_errors_exit_2() {
        let bad: &[&[&str]] = &[
            &["pixmill", "submit", "a.jpg"],
            &["pixmill", "submit", "a.jpg", "--resize", "big"],
            &["pixmill", "submit", "a.jpg", "--rotate", "45"],
            &["pixmill", "submit", "a.jpg", "--steps", "[{"],
            &["pixmill", "submit", "a.jpg", "--steps", "[]", "--swap"],
            &["pixmill", "submit", "a.jpg", "--swap", "--quality", "0"],
            &["pixmill", "submit", "--swap"],
            &["pixmill", "list", "--state", "lost"],
            &["pixmill", "frobnicate"],
        ];
        for argv in bad {
            let err = parse(*argv).expect_err("usage error");
            assert_eq!(err.exit_code(), 2, "{argv:?}: {err}");
        }
    }
}
