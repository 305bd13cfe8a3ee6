//! Every link in the repository's Markdown goes somewhere: README.md, docs/ and every
//! other `*.md` file (what builds and runs generate, under target/, var/, node_modules/
//! and bench/results/, aside).
//!
//! - A relative link names a file or folder of the repository, and its `#anchor`, if any,
//!   is the GitHub slug of a heading in that file.
//! - An http(s) link is not fetched, but must be a well-formed URL with a host.
//! - Each alert's `runbook` annotation in deploy/prometheus/ resolves the same way.
//! - README.md, the front door, stays under 400 lines; the rest belongs in docs/.
//!
//! No broker, no network: this reads files only.

use std::{
    collections::BTreeSet,
    path::{Component, Path, PathBuf},
};

/// README.md stays shorter than this.
const README_MAX_LINES: usize = 400;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package sits in the workspace")
        .to_path_buf()
}

/// Folders of generated files, relative to the root, never searched.
const GENERATED: [&str; 4] = ["target", "var", "node_modules", "bench/results"];

/// Every Markdown file of the repository, sorted.
fn markdown_files(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let rel = path.strip_prefix(root).expect("under the root");
            if name.starts_with('.')
                || GENERATED.iter().any(|g| rel == Path::new(g))
                || name == "node_modules"
            {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

/// GitHub's anchor for a heading: lowercase, every character dropped that is not a letter,
/// a digit, a space, `-` or `_`, then spaces turned into hyphens.
fn slug(heading: &str) -> String {
    heading
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The opening fence of a fenced code block: its character and length.
fn fence(line: &str) -> Option<(char, usize)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 3 {
        return None;
    }
    let c = trimmed.chars().next().filter(|&c| c == '`' || c == '~')?;
    let n = trimmed.chars().take_while(|&x| x == c).count();
    (n >= 3).then_some((c, n))
}

/// Which lines are inside fenced code blocks (fences included).
fn fenced_lines(text: &str) -> Vec<bool> {
    let mut open: Option<(char, usize)> = None;
    text.lines()
        .map(|line| match (open, fence(line)) {
            (None, Some(f)) => {
                open = Some(f);
                true
            }
            (Some((c, n)), Some((c2, n2))) if c == c2 && n2 >= n => {
                open = None;
                true
            }
            (open, _) => open.is_some(),
        })
        .collect()
}

/// The anchors of a Markdown file's headings, duplicates numbered as GitHub does
/// (`x`, `x-1`, `x-2`, …).
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (line, fenced) in text.lines().zip(fenced_lines(text)) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if fenced || !(1..=6).contains(&hashes) {
            continue;
        }
        let Some(title) = line[hashes..].strip_prefix(' ') else {
            continue;
        };
        // An optional closing sequence of #s.
        let title = title.trim().trim_end_matches('#').trim_end();
        let base = slug(title);
        let mut anchor = base.clone();
        let mut n = 0;
        while out.contains(&anchor) {
            n += 1;
            anchor = format!("{base}-{n}");
        }
        out.insert(anchor);
    }
    out
}

/// The text with fenced blocks and inline code spans blanked out (newlines kept, so byte
/// offsets and line numbers stay those of the file).
fn prose(text: &str) -> Vec<u8> {
    let mut out = text.as_bytes().to_vec();
    let mut offset = 0;
    for (line, fenced) in text.split_inclusive('\n').zip(fenced_lines(text)) {
        if fenced {
            for b in &mut out[offset..offset + line.trim_end_matches('\n').len()] {
                *b = b' ';
            }
        }
        offset += line.len();
    }
    // Code spans: a run of n backticks up to the next run of exactly n, within a paragraph.
    let mut i = 0;
    while i < out.len() {
        if out[i] != b'`' {
            i += 1;
            continue;
        }
        let n = out[i..].iter().take_while(|&&b| b == b'`').count();
        let body = i + n;
        let paragraph_end = find(&out[body..], b"\n\n").map_or(out.len(), |e| body + e);
        let mut j = body;
        let mut close = None;
        while j < paragraph_end {
            if out[j] == b'`' {
                let m = out[j..].iter().take_while(|&&b| b == b'`').count();
                if m == n {
                    close = Some(j);
                    break;
                }
                j += m;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                for b in &mut out[body..j] {
                    if *b != b'\n' {
                        *b = b'x';
                    }
                }
                i = j + n;
            }
            None => i = body,
        }
    }
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `(line, target)` of every link: inline `[text](target)` and `![alt](target)`,
/// reference definitions `[label]: target`, and autolinks `<https://…>`.
fn links(text: &str) -> Vec<(usize, String)> {
    let prose = prose(text);
    let line_of = |at: usize| prose[..at].iter().filter(|&&b| b == b'\n').count() + 1;
    let mut out = Vec::new();
    // Inline links.
    let mut at = 0;
    while let Some(i) = find(&prose[at..], b"](") {
        let start = at + i + 2;
        let rest = &prose[start..];
        let (target, len) = if rest.first() == Some(&b'<') {
            let end = rest.iter().position(|&b| b == b'>' || b == b'\n');
            let end = end.unwrap_or(rest.len());
            (&text[start + 1..start + end], end + 1)
        } else {
            // Up to whitespace or the closing parenthesis; balanced parentheses belong to it.
            let mut depth = 0usize;
            let end = rest
                .iter()
                .position(|&b| match b {
                    b'(' => {
                        depth += 1;
                        false
                    }
                    b')' if depth == 0 => true,
                    b')' => {
                        depth -= 1;
                        false
                    }
                    b => b.is_ascii_whitespace(),
                })
                .unwrap_or(rest.len());
            // After the target: the closing parenthesis, or a title. Anything else (a space
            // in the target) makes GitHub show the text as it is: keep it all, to report.
            let after = rest[end..].iter().position(|b| !b.is_ascii_whitespace());
            let next = after.map(|a| rest[end + a]);
            if matches!(next, Some(b')' | b'"' | b'\'' | b'(') | None) {
                (&text[start..start + end], end)
            } else {
                let close = rest.iter().position(|&b| b == b')' || b == b'\n');
                let close = close.unwrap_or(rest.len());
                (&text[start..start + close], close)
            }
        };
        out.push((line_of(start), target.to_string()));
        at = start + len.max(1);
    }
    // Reference definitions.
    let mut offset = 0;
    for line in String::from_utf8_lossy(&prose).split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix('[')
            && let Some(close) = rest.find("]:")
            && !rest[..close].is_empty()
            && !rest[..close].contains(['[', ']'])
        {
            let def_start = offset + (line.len() - trimmed.len()) + 1 + close + 2;
            let target = text[def_start..]
                .split_whitespace()
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .trim_end_matches('>');
            out.push((line_of(def_start), target.to_string()));
        }
        offset += line.len();
    }
    // Autolinks.
    for scheme in [b"<http://".as_slice(), b"<https://".as_slice()] {
        let mut at = 0;
        while let Some(i) = find(&prose[at..], scheme) {
            let start = at + i + 1;
            let end = prose[start..]
                .iter()
                .position(|&b| b == b'>' || b.is_ascii_whitespace())
                .map_or(prose.len(), |e| start + e);
            out.push((line_of(start), text[start..end].to_string()));
            at = end;
        }
    }
    out.sort();
    out
}

/// Why a link from `from` (a file of the repository) goes nowhere, or `None` when it
/// resolves.
fn broken(root: &Path, from: &Path, target: &str) -> Option<String> {
    if target.is_empty() {
        return Some("empty target".into());
    }
    if target.contains(char::is_whitespace) {
        return Some("whitespace in the target: GitHub shows this as text, not a link".into());
    }
    if target.starts_with("http://") || target.starts_with("https://") {
        return match reqwest::Url::parse(target) {
            Ok(url) if url.host_str().is_some_and(|h| !h.is_empty()) => None,
            Ok(_) => Some("URL without a host".into()),
            Err(e) => Some(format!("malformed URL: {e}")),
        };
    }
    if let Some(address) = target.strip_prefix("mailto:") {
        return (!address.contains('@')).then(|| "malformed mailto: link".into());
    }
    if target
        .split(['/', '#'])
        .next()
        .is_some_and(|s| s.contains(':'))
    {
        return Some("a scheme other than http, https or mailto".into());
    }
    let (path, anchor) = match target.split_once('#') {
        Some((path, anchor)) => (path, Some(anchor)),
        None => (target, None),
    };
    let file = if path.is_empty() {
        from.to_path_buf()
    } else if let Some(from_root) = path.strip_prefix('/') {
        root.join(from_root)
    } else {
        from.parent().expect("a file has a folder").join(path)
    };
    // Resolve `.` and `..` by hand, so a link cannot leave the repository unnoticed.
    let mut resolved = PathBuf::new();
    for part in file.components() {
        match part {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::CurDir => {}
            part => resolved.push(part),
        }
    }
    if !resolved.starts_with(root) {
        return Some("leaves the repository".into());
    }
    if !resolved.exists() {
        return Some(format!(
            "no such file: {}",
            resolved.strip_prefix(root).unwrap_or(&resolved).display()
        ));
    }
    let anchor = anchor?;
    if resolved.extension().is_some_and(|e| e == "md") {
        let text = std::fs::read_to_string(&resolved).expect("read the target");
        if anchors(&text).contains(anchor) {
            return None;
        }
        return Some(format!(
            "no heading with the anchor #{anchor} in {}",
            resolved.strip_prefix(root).unwrap_or(&resolved).display()
        ));
    }
    // GitHub's line anchors on source files: #L10 or #L10-L20.
    let lines = anchor.split('-').all(|l| {
        l.strip_prefix('L')
            .is_some_and(|n| n.parse::<u32>().is_ok())
    });
    (!lines).then(|| format!("#{anchor} on a file that is not Markdown"))
}

/// Every broken link in these files, as `file:line: target: why`.
fn broken_links(root: &Path, files: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    for file in files {
        let text =
            std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        for (line, target) in links(&text) {
            if let Some(why) = broken(root, file, &target) {
                let rel = file.strip_prefix(root).unwrap_or(file);
                problems.push(format!("{}:{line}: ({target}): {why}", rel.display()));
            }
        }
    }
    problems
}

#[test]
fn every_markdown_link_resolves() {
    let root = root();
    let files = markdown_files(&root);
    for needed in ["README.md", "docs/api.md", "docs/operations.md"] {
        assert!(
            files.contains(&root.join(needed)),
            "{needed} is not among the Markdown files: {files:?}"
        );
    }
    let count: usize = files
        .iter()
        .map(|f| links(&std::fs::read_to_string(f).expect("read")).len())
        .sum();
    assert!(
        count >= 50,
        "only {count} links found: is the link parser broken?"
    );
    let problems = broken_links(&root, &files);
    assert!(
        problems.is_empty(),
        "{} broken link(s) in the Markdown files:\n{}",
        problems.len(),
        problems.join("\n")
    );
    println!("docs_links: {count} links in {} files resolve", files.len());
}

#[test]
fn every_alert_runbook_resolves() {
    let root = root();
    let mut problems = Vec::new();
    let mut count = 0;
    for name in ["alerts.yaml", "alerts.test.yaml"] {
        let path = root.join("deploy/prometheus").join(name);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, line) in text.lines().enumerate() {
            let Some(target) = line.trim().strip_prefix("runbook:") else {
                continue;
            };
            let target = target.trim().trim_matches(['"', '\'']);
            count += 1;
            // A runbook names its file from the repository's root.
            if let Some(why) = broken(&root, &root.join("README.md"), target) {
                problems.push(format!(
                    "deploy/prometheus/{name}:{}: ({target}): {why}",
                    i + 1
                ));
            }
        }
    }
    assert!(count > 0, "no runbook annotations found");
    assert!(
        problems.is_empty(),
        "broken runbook links:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_readme_stays_short() {
    let text = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let lines = text.lines().count();
    assert!(
        lines < README_MAX_LINES,
        "README.md has {lines} lines; keep it under {README_MAX_LINES} and move the detail to docs/"
    );
}

/// The parts, on text made up here.
#[test]
fn the_link_parser_and_the_slugs_follow_github() {
    assert_eq!(
        slug("Status: `GET /v1/jobs/{id}[?wait=N]`"),
        "status-get-v1jobsidwaitn"
    );
    assert_eq!(
        slug("The contract: `/openapi.json` and `/docs`"),
        "the-contract-openapijson-and-docs"
    );
    assert_eq!(slug("RabbitMQ's own metrics"), "rabbitmqs-own-metrics");
    assert_eq!(slug("snake_case stays"), "snake_case-stays");
    let text = "# A\n\n## A\n\n```\n# not a heading\n```\n\n### A #\n";
    let want: BTreeSet<String> = ["a", "a-1", "a-2"].map(String::from).into();
    assert_eq!(anchors(text), want);
    let text = "See [one](a.md#x) and `[not](code)`.\n\
                ```sh\n[not](fenced)\n```\n\
                [two\nlines](b.md) ![img](c.png \"title\") <https://example.com/x>\n\
                [ref]: d.md#y\n\
                [bad](https://exa mple)\n";
    let found: Vec<(usize, String)> = links(text);
    let want: Vec<(usize, String)> = vec![
        (1, "a.md#x".into()),
        (6, "b.md".into()),
        (6, "c.png".into()),
        (6, "https://example.com/x".into()),
        (7, "d.md#y".into()),
        (8, "https://exa mple".into()),
    ];
    assert_eq!(found, want);
    let root = root();
    let readme = root.join("README.md");
    assert!(broken(&root, &readme, "https://exa mple").is_some());
    assert!(broken(&root, &readme, "https://").is_some());
    assert!(broken(&root, &readme, "ftp://example.com/").is_some());
    assert!(broken(&root, &readme, "docs/nowhere.md").is_some());
    assert!(broken(&root, &readme, "../outside.md").is_some());
    assert!(broken(&root, &readme, "docs/api.md#no-such-heading").is_some());
    assert_eq!(broken(&root, &readme, "docs/api.md#errors"), None);
    assert_eq!(broken(&root, &readme, "https://example.com/a?b=c#d"), None);
}
