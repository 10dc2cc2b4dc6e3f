//! Every relative link in the documentation leads somewhere.
//!
//! Scans README.md, BENCHMARKS.md, docs/*.md and clients/**/README.md for
//! Markdown links and images (`[text](target)`, `![alt](target)`) and
//! reference definitions (`[label]: target`) outside fenced code blocks and
//! code spans. A target that is not a URL (`http:`, `https:`, `mailto:`, ...)
//! must name a file or directory that exists relative to the linking file;
//! a `#anchor` must match a heading of the target Markdown file (or of the
//! linking file itself for a bare `#anchor`) by GitHub's slug rules.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked, relative to the root.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut files = vec![root.join("README.md"), root.join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = fs::read_dir(root.join("docs"))
        .expect("a docs/ directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut clients = Vec::new();
    find_readmes(&root.join("clients"), &mut clients);
    clients.sort();
    files.extend(clients);
    files
}

fn find_readmes(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            // installed dependencies and virtualenvs are not ours
            if name != "node_modules" && !name.starts_with('.') {
                find_readmes(&path, out);
            }
        } else if name == "README.md" {
            out.push(path);
        }
    }
}

/// The lines of `text` outside fenced code blocks, each with its 1-based
/// line number; fenced lines come back empty so paragraphs stay apart.
fn prose_lines(text: &str) -> Vec<(usize, String)> {
    let mut fence: Option<(char, usize)> = None;
    let mut out = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~');
        let run = marker.map_or(0, |c| trimmed.chars().take_while(|x| *x == c).count());
        match fence {
            None if indent < 4 && run >= 3 => {
                fence = Some((marker.unwrap(), run));
                out.push((index + 1, String::new()));
            }
            Some((c, n)) => {
                let closes = indent < 4
                    && marker == Some(c)
                    && run >= n
                    && trimmed[run * c.len_utf8()..].trim().is_empty();
                if closes {
                    fence = None;
                }
                out.push((index + 1, String::new()));
            }
            None => out.push((index + 1, line.to_string())),
        }
    }
    out
}

/// Replaces every code span of a paragraph with spaces (a backtick run
/// without a closing run of the same length stays literal).
fn blank_code_spans(paragraph: &str) -> String {
    let chars: Vec<char> = paragraph.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            i += 1;
            continue;
        }
        let open = chars[i..].iter().take_while(|c| **c == '`').count();
        let mut j = i + open;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let run = chars[j..].iter().take_while(|c| **c == '`').count();
                if run == open {
                    close = Some(j);
                    break;
                }
                j += run;
            } else {
                j += 1;
            }
        }
        match close {
            Some(j) => {
                for c in &mut out[i..j + open] {
                    if *c != '\n' {
                        *c = ' ';
                    }
                }
                i = j + open;
            }
            None => i += open,
        }
    }
    out.into_iter().collect()
}

struct Link {
    line: usize,
    target: String,
}

/// The link targets of one Markdown document.
fn links(text: &str) -> Vec<Link> {
    let lines = prose_lines(text);
    let mut found = Vec::new();
    // paragraphs: runs of non-blank lines (a code span never crosses one)
    let mut start = 0;
    while start < lines.len() {
        if lines[start].1.trim().is_empty() {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < lines.len() && !lines[end].1.trim().is_empty() {
            end += 1;
        }
        let first_line = lines[start].0;
        let paragraph: Vec<&str> = lines[start..end].iter().map(|(_, l)| l.as_str()).collect();
        let paragraph = blank_code_spans(&paragraph.join("\n"));
        inline_links(&paragraph, first_line, &mut found);
        for (offset, line) in paragraph.lines().enumerate() {
            if let Some(target) = reference_definition(line) {
                found.push(Link {
                    line: first_line + offset,
                    target,
                });
            }
        }
        start = end;
    }
    found
}

/// `](target)` after a bracketed text; the target ends at whitespace (a
/// title may follow) or at its closing parenthesis.
fn inline_links(paragraph: &str, first_line: usize, found: &mut Vec<Link>) {
    let bytes = paragraph.as_bytes();
    let mut i = 0;
    while let Some(at) = paragraph[i..].find("](") {
        let close = i + at;
        i = close + 2;
        // a link text needs its opening bracket
        if !paragraph[..close].contains('[') {
            continue;
        }
        let rest = &paragraph[i..];
        let target = if let Some(inner) = rest.strip_prefix('<') {
            match inner.find('>') {
                Some(end) => &inner[..end],
                None => continue,
            }
        } else {
            let mut depth = 0usize;
            let end = rest
                .char_indices()
                .find(|(_, c)| match c {
                    '(' => {
                        depth += 1;
                        false
                    }
                    ')' if depth > 0 => {
                        depth -= 1;
                        false
                    }
                    ')' => true,
                    c => c.is_whitespace(),
                })
                .map_or(rest.len(), |(end, _)| end);
            &rest[..end]
        };
        let line = first_line + bytes[..close].iter().filter(|b| **b == b'\n').count();
        found.push(Link {
            line,
            target: target.to_string(),
        });
    }
}

/// `[label]: target` at the start of a line.
fn reference_definition(line: &str) -> Option<String> {
    let line = line.trim_start();
    let rest = line.strip_prefix('[')?;
    let end = rest.find("]:")?;
    if rest[..end].is_empty() || rest[..end].contains(']') {
        return None;
    }
    let target = rest[end + 2..].split_whitespace().next()?;
    Some(
        target
            .trim_start_matches('<')
            .trim_end_matches('>')
            .to_string(),
    )
}

/// GitHub's anchor for a heading: lowercase, markup dropped, every character
/// that is not a letter, digit, space, `-` or `_` removed, spaces to `-`.
fn slug(heading: &str) -> String {
    let text = strip_inline_links(heading);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](target)` -> `text` (a heading's anchor comes from its text).
fn strip_inline_links(heading: &str) -> String {
    let mut out = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else {
            break;
        };
        let Some(close) = rest[open + mid..].find(')') else {
            break;
        };
        out.push_str(&rest[..open]);
        out.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    out.push_str(rest);
    out
}

/// Every anchor a Markdown document offers: heading slugs (a repeated slug
/// gets `-1`, `-2`, ... as on GitHub) and explicit `<a name/id="...">`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose_lines(text) {
        let trimmed = line.trim_start();
        let hashes = trimmed.chars().take_while(|c| *c == '#').count();
        let is_heading = line.len() - trimmed.len() < 4
            && (1..=6).contains(&hashes)
            && (trimmed.len() == hashes || trimmed[hashes..].starts_with([' ', '\t']));
        if is_heading {
            let title = trimmed[hashes..].trim();
            // an optional closing sequence of #s
            let title = title.trim_end_matches('#').trim_end();
            let base = slug(title);
            let count = seen.entry(base.clone()).or_insert(0);
            let anchor = if *count == 0 {
                base.clone()
            } else {
                format!("{base}-{count}")
            };
            *count += 1;
            out.insert(anchor);
        }
        for attr in ["name=\"", "id=\""] {
            let mut rest = line.as_str();
            while let Some(at) = rest.find(attr) {
                rest = &rest[at + attr.len()..];
                if let Some(end) = rest.find('"') {
                    out.insert(rest[..end].to_string());
                }
            }
        }
    }
    out
}

fn is_url(target: &str) -> bool {
    // a scheme: letters, digits, `+`, `-`, `.` and then `:` (http:, mailto:)
    match target.find(':') {
        Some(colon) => {
            let scheme = &target[..colon];
            !scheme.is_empty()
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }
        None => false,
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .filter(|_| bytes[i] == b'%')
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The problems with the links of `file` (one message each).
fn check(root: &Path, file: &Path, cache: &mut HashMap<PathBuf, BTreeSet<String>>) -> Vec<String> {
    let text = fs::read_to_string(file).unwrap();
    let shown = file
        .strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string();
    let mut problems = Vec::new();
    for Link { line, target } in links(&text) {
        if target.is_empty() || is_url(&target) {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let path = percent_decode(path);
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else if let Some(from_root) = path.strip_prefix('/') {
            root.join(from_root)
        } else {
            file.parent().unwrap().join(&path)
        };
        if !resolved.exists() {
            problems.push(format!(
                "{shown}:{line}: link `{target}`: no file {}",
                resolved.display()
            ));
            continue;
        }
        let Some(anchor) = anchor else {
            continue;
        };
        if resolved.extension().is_none_or(|ext| ext != "md") {
            problems.push(format!(
                "{shown}:{line}: link `{target}`: an anchor into a file that is not Markdown"
            ));
            continue;
        }
        let canonical = resolved.canonicalize().unwrap();
        let offered = cache
            .entry(canonical.clone())
            .or_insert_with(|| anchors(&fs::read_to_string(&canonical).unwrap()));
        let anchor = percent_decode(anchor).to_lowercase();
        if !offered.contains(&anchor) {
            problems.push(format!(
                "{shown}:{line}: link `{target}`: no heading with anchor `#{anchor}` in {}",
                canonical
                    .strip_prefix(root.canonicalize().unwrap())
                    .unwrap_or(&canonical)
                    .display()
            ));
        }
    }
    problems
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let root = root();
    let files = documents(&root);
    assert!(files.len() >= 4, "found only {files:?}");
    let mut cache = HashMap::new();
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in &files {
        checked += links(&fs::read_to_string(file).unwrap()).len();
        problems.extend(check(&root, file, &mut cache));
    }
    assert!(checked > 0, "no links found in {files:?}");
    assert!(
        problems.is_empty(),
        "{} broken link(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn the_slug_rules_match_github() {
    assert_eq!(slug("Quick start"), "quick-start");
    assert_eq!(
        slug("Faults: what happens when things break"),
        "faults-what-happens-when-things-break"
    );
    assert_eq!(
        slug("Waiting for replicas: `--produce-wait-replicas N`"),
        "waiting-for-replicas---produce-wait-replicas-n"
    );
    assert_eq!(slug("`streamgate demo`"), "streamgate-demo");
    assert_eq!(
        slug("Redis Cluster: C1, C3, C30"),
        "redis-cluster-c1-c3-c30"
    );
    assert_eq!(
        slug("Who is stuck, and why: grpcurl runbook"),
        "who-is-stuck-and-why-grpcurl-runbook"
    );
    assert_eq!(slug("See [the API](api.md) now"), "see-the-api-now");
    assert_eq!(slug("snake_case and-dash"), "snake_case-and-dash");
}

#[test]
fn links_in_code_are_not_links() {
    let text = "Text [a](a.md) and `[b](b.md)`.\n\n```sh\n[c](c.md)\n# Heading in code\n```\n\n[d](<d e.md>) [f](f.md \"title\")\n\n[ref]: g.md\n";
    let targets: Vec<String> = links(text).into_iter().map(|l| l.target).collect();
    assert_eq!(targets, ["a.md", "d e.md", "f.md", "g.md"]);
    let found = anchors("# Top\n\n```\n# not a heading\n```\n\n## Top\n");
    assert_eq!(
        found,
        BTreeSet::from(["top".to_string(), "top-1".to_string()])
    );
}

#[test]
fn a_link_spanning_lines_is_found() {
    let text = "see [Broken and\n  hostile clients](security.md#broken-and-hostile-clients) now\n";
    let found = links(text);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].target, "security.md#broken-and-hostile-clients");
    assert_eq!(found[0].line, 2);
}
