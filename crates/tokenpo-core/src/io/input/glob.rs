//! Expanding the input arguments: files, and `*`/`?` wildcards in file names.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Expands each pattern to the files it names, sorted and without duplicates.
///
/// A pattern is a path to a file, or a path whose file-name part holds `*` (any run of
/// characters) or `?` (one character), such as `data/*.parquet`; its directory part is
/// taken literally. As in a shell, a wildcard does not match a leading `.`. A pattern
/// that names no file is an [`Error::File`] naming it.
///
/// Prep never reads the files of `out`, its output directory: a rerun would read the
/// run's own `quarantine.jsonl` or shards back as input. A pattern's matches all lie in
/// its one directory, so leaving those out would leave the pattern empty: a pattern that
/// names files in `out`, by name or by wildcard, is an [`Error::File`] saying so. (Prep
/// writes nothing in the subdirectories of `out` that a pattern can name.)
pub fn expand_inputs(patterns: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>> {
    // Resolved, as `../out` or a link to it is the same directory; one not made yet holds
    // no input.
    let out = if out.is_dir() { Some(canonical(out)?) } else { None };
    let mut files = Vec::new();
    for pattern in patterns {
        let matched = expand_one(pattern)?;
        if matched.is_empty() {
            return Err(Error::File { file: pattern.clone(), reason: "no file matches".into() });
        }
        if let Some(out) = &out {
            if canonical(directory_of(pattern))? == *out {
                return Err(inside_output(pattern, out, matched.len()));
            }
        }
        files.extend(matched);
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn inside_output(pattern: &Path, out: &Path, matched: usize) -> Error {
    let out = out.display();
    let reason = if is_pattern(pattern) {
        let files = if matched == 1 { "file" } else { "files" };
        format!(
            "matches {matched} {files} in the output directory {out}, whose files prep writes \
             and never reads (a rerun would read its own quarantine.jsonl back); keep the \
             output directory apart from the inputs"
        )
    } else {
        format!(
            "is in the output directory {out}, whose files prep writes and never reads; keep \
             the output directory apart from the inputs"
        )
    };
    Error::File { file: pattern.to_owned(), reason }
}

/// The directory a pattern's files are in (where their entries are: a link to a file
/// elsewhere counts where it lies).
fn directory_of(pattern: &Path) -> &Path {
    match pattern.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    }
}

fn canonical(directory: &Path) -> Result<PathBuf> {
    fs::canonicalize(directory).map_err(|error| Error::io(directory, &error))
}

fn is_pattern(pattern: &Path) -> bool {
    pattern.file_name().and_then(|name| name.to_str()).is_some_and(|name| name.contains(['*', '?']))
}

fn expand_one(pattern: &Path) -> Result<Vec<PathBuf>> {
    let Some(name) = pattern.file_name().and_then(|name| name.to_str()) else {
        return literal(pattern);
    };
    if !is_pattern(pattern) {
        return literal(pattern);
    }
    let parent = pattern.parent().unwrap_or(Path::new(""));
    let directory = directory_of(pattern);
    let entries = fs::read_dir(directory).map_err(|error| Error::io(directory, &error))?;
    let mut matched = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| Error::io(directory, &error))?;
        let file_name = entry.file_name();
        let path = parent.join(&file_name);
        if file_name.to_str().is_some_and(|candidate| matches(name, candidate)) && path.is_file() {
            matched.push(path);
        }
    }
    Ok(matched)
}

/// A pattern without wildcards: the file itself, when it is one.
fn literal(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_dir() {
        return Err(Error::File {
            file: path.to_owned(),
            reason: "is a directory; give files or a pattern such as dir/*.parquet".into(),
        });
    }
    Ok(if path.is_file() { vec![path.to_owned()] } else { Vec::new() })
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?` one
/// character, neither matching a leading `.`.
pub(super) fn matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Greedy match with one backtrack point: the last `*` seen and where its run ends.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((star_p, star_n)) => {
                    star = Some((star_p, star_n + 1));
                    p = star_p + 1;
                    n = star_n + 1;
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(matches("*.parquet", "a.parquet"));
        assert!(!matches("*.parquet", ".parquet"));
        assert!(matches("part-?.jsonl", "part-1.jsonl"));
        assert!(!matches("part-?.jsonl", "part-10.jsonl"));
        assert!(matches("p*t-*.j*l", "part-10.jsonl"));
        assert!(matches("*", "anything"));
        assert!(matches("a*b*c", "aXbYbZc"));
        assert!(!matches("a*b*c", "aXbYbZ"));
        assert!(!matches("*.parquet", "a.parquet.tmp"));
        assert!(matches(".*", ".hidden"));
        assert!(!matches("*", ".hidden"));
        assert!(matches("données-*.json", "données-é.json"));
    }
}
