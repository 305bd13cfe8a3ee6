//! One progress bar per file, in two phases: the upload (bytes) and then the job
//! (a spinner with its state). indicatif draws nothing when stderr is not a terminal,
//! and `--json` hides the bars outright, so scripts see only the document on stdout.

use std::{sync::Arc, time::Duration};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars of one run.
#[derive(Clone)]
pub struct Bars {
    multi: MultiProgress,
    /// Width of the file-name column, so the bars line up.
    name_width: usize,
}

impl Bars {
    /// Bars on stderr, or hidden ones when `hidden` (for `--json`).
    pub fn new(hidden: bool, names: &[String]) -> Self {
        let target = if hidden {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        let name_width = names
            .iter()
            .map(|n| n.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(8, 28);
        Self {
            multi: MultiProgress::with_draw_target(target),
            name_width,
        }
    }

    /// A bar for `name`, waiting for a slot (under `--concurrency`).
    pub fn add(&self, name: &str) -> FileBar {
        let bar = self.multi.add(ProgressBar::new(0));
        bar.set_style(style(&format!(
            "{{prefix:{}}} {{msg:.dim}}",
            self.name_width
        )));
        bar.set_prefix(shorten(name, self.name_width));
        bar.set_message("waiting");
        FileBar {
            bar,
            width: self.name_width,
        }
    }

    /// Prints a line above the bars without tearing them.
    pub fn println(&self, line: &str) {
        if self.multi.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.multi.println(line);
        }
    }
}

/// The bar of one file.
#[derive(Clone)]
pub struct FileBar {
    bar: ProgressBar,
    width: usize,
}

impl FileBar {
    /// Upload phase: a byte bar of `len`.
    pub fn uploading(&self, len: u64) {
        self.bar.set_style(style(&format!(
            "{{prefix:{}}} [{{bar:24.cyan/blue}}] {{bytes:>9}}/{{total_bytes:<9}} {{msg}}",
            self.width
        )));
        self.bar.set_length(len);
        self.bar.set_position(0);
        self.bar.set_message("uploading");
    }

    /// Called with the bytes sent so far; cheap, so it can run for every chunk.
    pub fn progress_fn(&self) -> Arc<dyn Fn(u64) + Send + Sync> {
        let bar = self.bar.clone();
        Arc::new(move |sent| bar.set_position(sent))
    }

    /// Job phase: a spinner with the job's state.
    pub fn processing(&self, state: &str) {
        self.bar.set_style(style(&format!(
            "{{prefix:{}}} {{spinner:.green}} {{msg}} {{elapsed:.dim}}",
            self.width
        )));
        self.bar.set_message(state.to_string());
        self.bar.enable_steady_tick(Duration::from_millis(120));
    }

    /// A new state or a note ("gateway busy, try 2/3").
    pub fn message(&self, text: &str) {
        self.bar.set_message(text.to_string());
    }

    /// The final line for this file.
    pub fn finish(&self, ok: bool, text: &str) {
        self.bar
            .set_style(style(&format!("{{prefix:{}}} {{msg}}", self.width)));
        let mark = if ok { "✔" } else { "✘" };
        self.bar.finish_with_message(format!("{mark} {text}"));
    }
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// Keeps the end of a long name, where the distinguishing part usually is.
pub fn shorten(name: &str, width: usize) -> String {
    let count = name.chars().count();
    if count <= width {
        return name.to_string();
    }
    let tail: String = name.chars().skip(count + 1 - width).collect();
    format!("…{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_keep_their_end() {
        assert_eq!(shorten("flower.jpg", 12), "flower.jpg");
        let short = shorten("a-very-long-photograph-name.jpg", 12);
        assert_eq!(short.chars().count(), 12);
        assert!(short.ends_with("name.jpg"));
    }

    #[test]
    fn templates_are_valid() {
        let bars = Bars::new(true, &["a.jpg".into()]);
        let bar = bars.add("a.jpg");
        bar.uploading(10);
        (bar.progress_fn())(5);
        bar.processing("queued");
        bar.finish(true, "done");
    }
}
