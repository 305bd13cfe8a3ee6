//! How blob keys are spelled: the only place that knows. Keys are relative paths such
//! as `inputs/<job id>`, made of characters every backend accepts as they are.

use uuid::Uuid;

use super::BlobError;
use crate::messages::OutputFormat;

/// Key of a job's uploaded image.
pub fn input(id: Uuid) -> String {
    format!("inputs/{id}")
}

/// Key of a job's result.
pub fn result(id: Uuid, format: OutputFormat) -> String {
    format!("results/{id}.{}", format.extension())
}

/// Key of one output of a job with variants; `name` is a checked variant name
/// ([`crate::messages::valid_variant_name`]).
pub fn variant(id: Uuid, name: &str, format: OutputFormat) -> String {
    format!("results/{id}-{name}.{}", format.extension())
}

/// Key of the image a job's routing slip hands on: the image as it stands before step
/// `cursor`, written by the worker that ran the steps before it (lossless PNG).
pub fn intermediate(id: Uuid, cursor: usize) -> String {
    format!("work/{id}-{cursor}.png")
}

/// Key of the marker that tells workers a job was cancelled.
pub fn cancel(id: Uuid) -> String {
    format!("cancelled/{id}")
}

/// Key of the mark a worker leaves while it runs a job handed out again
/// (`x-delivery-count` = `delivery`, after `retries` transient-failure retries). A worker
/// that finishes the job, or hands it back alive, removes its mark; a worker that dies
/// leaves it. The marks a later delivery finds are the workers that died on the job.
pub fn run_mark(id: Uuid, retries: u32, delivery: u32) -> String {
    format!("running/{id}-{retries}-{delivery}")
}

/// Refuses any key that could leave the store's folder or prefix, or that a backend
/// would have to escape: `/`-separated parts of letters, digits, `-`, `_` and `.`.
pub fn validate(key: &str) -> Result<(), BlobError> {
    let valid = !key.is_empty()
        && key.len() <= 200
        && key
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if valid {
        Ok(())
    } else {
        Err(BlobError::InvalidKey(key.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_keys_are_valid_and_distinct() {
        let id = Uuid::new_v4();
        let made = [
            input(id),
            result(id, OutputFormat::Png),
            cancel(id),
            intermediate(id, 3),
            run_mark(id, 0, 1),
            variant(id, "w_640-webp", OutputFormat::Webp),
        ];
        for key in &made {
            validate(key).expect(key);
        }
        assert_eq!(result(id, OutputFormat::Jpeg), format!("results/{id}.jpg"));
        assert_eq!(
            variant(id, "small", OutputFormat::Jpeg),
            format!("results/{id}-small.jpg")
        );
        assert_ne!(made[0], made[2]);
    }

    #[test]
    fn keys_that_could_escape_are_refused() {
        for key in [
            "../etc/passwd",
            "/etc/passwd",
            "inputs/../../x",
            "",
            "a//b",
            "inputs/a b",
            "inputs/",
            "inputs/é",
        ] {
            assert!(
                matches!(validate(key), Err(BlobError::InvalidKey(_))),
                "{key:?}"
            );
        }
    }
}
