//! Which files to upload and where their results go, decided before anything is sent,
//! so a typo in the fifth file name stops the run before the first upload (exit 2).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
};

/// A mistake in the command line found after clap: a missing file, a pattern that
/// matches nothing, two inputs that would write the same output.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Where results are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// No `-o`: nothing is downloaded.
    None,
    /// `-o out.jpg` with one input: exactly this path.
    File(PathBuf),
    /// `-o DIR/`: `DIR/<input stem>.<extension of the result's type>`.
    Dir(PathBuf),
}

impl Output {
    /// The path for `input`'s result of type `content_type`.
    pub fn path_for(&self, input: &Path, content_type: &str) -> Option<PathBuf> {
        match self {
            Output::None => None,
            Output::File(path) => Some(path.clone()),
            Output::Dir(dir) => {
                let stem = input.file_stem().unwrap_or_default().to_string_lossy();
                Some(dir.join(format!("{stem}.{}", extension(content_type))))
            }
        }
    }

    /// The path for `input`'s output `name` (a variant) of type `content_type`:
    /// `<stem>-<name>.<extension>`, in the directory, or beside the file `-o` named
    /// with that file's stem.
    pub fn path_for_variant(
        &self,
        input: &Path,
        name: &str,
        content_type: &str,
    ) -> Option<PathBuf> {
        let (dir, stem) = match self {
            Output::None => return None,
            Output::File(path) => (
                path.parent().unwrap_or(Path::new("")),
                path.file_stem().unwrap_or_default(),
            ),
            Output::Dir(dir) => (dir.as_path(), input.file_stem().unwrap_or_default()),
        };
        let stem = stem.to_string_lossy();
        Some(dir.join(format!("{stem}-{name}.{}", extension(content_type))))
    }
}

/// The file extension of a result's content type.
pub fn extension(content_type: &str) -> &'static str {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    match essence.to_ascii_lowercase().as_str() {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/webp" => "webp",
        "image/gif" => "gif",
        _ => "bin",
    }
}

fn is_pattern(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

/// Expands the FILE arguments: a pattern the shell left alone is matched here (in
/// sorted order), a plain name must be an existing file. A name that exists is taken
/// literally even if it contains `[`, as a shell would.
pub fn expand(args: &[String]) -> Result<Vec<PathBuf>, UsageError> {
    let mut files = Vec::new();
    for arg in args {
        let literal = Path::new(arg);
        if is_pattern(arg) && !literal.exists() {
            let paths = glob::glob(arg)
                .map_err(|e| UsageError(format!("{arg:?} is not a valid pattern: {e}")))?;
            let mut matched: Vec<PathBuf> = paths
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            if matched.is_empty() {
                return Err(UsageError(format!("{arg:?} matches no file")));
            }
            matched.sort();
            files.extend(matched);
        } else if literal.is_file() {
            files.push(literal.to_path_buf());
        } else if literal.exists() {
            return Err(UsageError(format!("{arg}: not a file")));
        } else {
            return Err(UsageError(format!("{arg}: no such file")));
        }
    }
    Ok(files)
}

/// Decides what `-o` means. A directory is meant when there are several inputs, the
/// path ends in a separator, or it is an existing directory; it is created if need be.
/// In a directory, two inputs with the same stem would overwrite each other, so that is
/// refused up front; with `variants` (their names), so are two inputs whose
/// `<stem>-<name>` outputs meet.
pub fn plan(
    output: Option<&Path>,
    inputs: &[PathBuf],
    variants: &[String],
) -> Result<Output, UsageError> {
    let Some(path) = output else {
        return Ok(Output::None);
    };
    let text = path.as_os_str().to_string_lossy();
    let trailing = text.chars().last().is_some_and(std::path::is_separator);
    if !(inputs.len() > 1 || trailing || path.is_dir()) {
        return Ok(Output::File(path.to_path_buf()));
    }
    let mut seen: HashMap<String, &Path> = HashMap::new();
    for input in inputs {
        let stem = input.file_stem().unwrap_or_default().to_string_lossy();
        let written: Vec<String> = if variants.is_empty() {
            vec![stem.to_string()]
        } else {
            variants
                .iter()
                .map(|name| format!("{stem}-{name}"))
                .collect()
        };
        for name in written {
            if let Some(first) = seen.insert(name.clone(), input) {
                return Err(UsageError(format!(
                    "{} and {} would both be written to {}/{name}.*; submit them separately",
                    first.display(),
                    input.display(),
                    path.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(path)
        .map_err(|e| UsageError(format!("cannot create {}: {e}", path.display())))?;
    Ok(Output::Dir(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "pixmill-cli-{name}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn patterns_expand_sorted_and_names_must_exist() {
        let dir = scratch("expand");
        for name in ["b.jpg", "a.jpg", "c.png", "[x].jpg"] {
            std::fs::write(dir.join(name), b"x").expect("write");
        }
        let d = dir.display();
        let files = expand(&[format!("{d}/*.jpg")]).expect("expands");
        let names: Vec<_> = files
            .iter()
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["[x].jpg", "a.jpg", "b.jpg"]);
        // An existing name with a bracket is that file, not a pattern.
        assert_eq!(expand(&[format!("{d}/[x].jpg")]).expect("literal").len(), 1);
        assert!(expand(&[format!("{d}/*.gif")]).is_err());
        assert!(expand(&[format!("{d}/missing.jpg")]).is_err());
        assert!(expand(&[format!("{d}")]).is_err());
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn output_is_a_file_or_a_directory() {
        let dir = scratch("plan");
        let one = [PathBuf::from("in/flower.jpg")];
        let two = [PathBuf::from("a/x.jpg"), PathBuf::from("b/y.png")];
        assert_eq!(plan(None, &one, &[]).expect("none"), Output::None);
        let file = dir.join("out.jpg");
        assert_eq!(
            plan(Some(&file), &one, &[]).expect("file"),
            Output::File(file.clone())
        );
        let slash = PathBuf::from(format!("{}/new/", dir.display()));
        assert_eq!(
            plan(Some(&slash), &one, &[]).expect("dir"),
            Output::Dir(slash.clone())
        );
        assert!(slash.is_dir(), "the directory is created");
        assert!(matches!(plan(Some(&dir), &one, &[]), Ok(Output::Dir(_))));
        let many = dir.join("many");
        assert!(matches!(plan(Some(&many), &two, &[]), Ok(Output::Dir(_))));
        let clash = [PathBuf::from("a/x.jpg"), PathBuf::from("b/x.png")];
        assert!(plan(Some(&many), &clash, &[]).is_err());
        let out = Output::Dir(PathBuf::from("out"));
        assert_eq!(
            out.path_for(Path::new("in/flower.jpg"), "image/webp"),
            Some(PathBuf::from("out/flower.webp"))
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn variants_are_written_as_stem_dash_name() {
        let input = Path::new("in/flower.jpg");
        let dir = Output::Dir(PathBuf::from("out"));
        assert_eq!(
            dir.path_for_variant(input, "w640-webp", "image/webp"),
            Some(PathBuf::from("out/flower-w640-webp.webp"))
        );
        // `-o FILE` with one input: the outputs go beside it, named after it.
        let file = Output::File(PathBuf::from("res/photo.jpg"));
        assert_eq!(
            file.path_for_variant(input, "w320", "image/jpeg"),
            Some(PathBuf::from("res/photo-w320.jpg"))
        );
        let bare = Output::File(PathBuf::from("photo.png"));
        assert_eq!(
            bare.path_for_variant(input, "w320", "image/png"),
            Some(PathBuf::from("photo-w320.png"))
        );
        assert_eq!(
            Output::None.path_for_variant(input, "w320", "image/png"),
            None
        );

        // Two inputs whose outputs would meet are refused; apart they are fine.
        let scratch = scratch("variants");
        let names = ["x-w320".to_string(), "w320".to_string()];
        let meet = [PathBuf::from("a/photo.jpg"), PathBuf::from("b/photo-x.jpg")];
        let err = plan(Some(&scratch), &meet, &names).expect_err("the outputs meet");
        assert!(err.0.contains("photo-x-w320"), "{err}");
        let apart = [PathBuf::from("a/photo.jpg"), PathBuf::from("b/other.jpg")];
        assert!(plan(Some(&scratch), &apart, &names).is_ok());
        std::fs::remove_dir_all(scratch).ok();
    }

    #[test]
    fn extensions_follow_the_content_type() {
        assert_eq!(extension("image/jpeg"), "jpg");
        assert_eq!(extension("image/PNG; charset=binary"), "png");
        assert_eq!(extension("application/octet-stream"), "bin");
    }
}
