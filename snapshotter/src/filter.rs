//! containerd's filter syntax for `Walk` (containerd `pkg/filters`):
//! a request carries filters that are OR'ed; each filter is selectors
//! joined by `,` that are AND'ed; a selector is a field path alone
//! (present and not empty) or `FIELD==VALUE`, `FIELD!=VALUE`,
//! `FIELD~=REGEX`. Field paths of a snapshot: `name`, `parent`, `kind`
//! (`View`, `Active`, `Committed`, as containerd names them) and
//! `labels.KEY` (a key with dots or other characters in double quotes:
//! `labels."containerd.io/gc.root"`). Values are bare (up to the next
//! `,`) or double-quoted with backslash escapes.
//!
//! containerd's own metadata layer filters what it asks for itself, but a
//! client speaking to the snapshotter's socket directly gets the same
//! answer as from containerd's built-in snapshotters.

use std::collections::HashMap;

use regex::Regex;

use crate::error::{Error, Result};

/// Longest filter accepted, and longest regular expression program.
const MAX_FILTER: usize = 4096;
const MAX_REGEX: usize = 1 << 20;

/// One snapshot's fields, as filters see them.
pub struct Fields<'a> {
    pub name: &'a str,
    pub parent: &'a str,
    pub kind: &'a str,
    pub labels: &'a HashMap<String, String>,
}

enum Op {
    Present,
    Eq(String),
    Ne(String),
    Matches(Regex),
}

struct Selector {
    path: Vec<String>,
    op: Op,
}

/// A parsed `Walk` request: any of `filters` (empty: everything).
pub struct Filter {
    any: Vec<Vec<Selector>>,
}

impl Filter {
    pub fn parse(filters: &[String]) -> Result<Filter> {
        let mut any = Vec::new();
        for f in filters.iter().filter(|f| !f.trim().is_empty()) {
            any.push(
                parse_one(f)
                    .map_err(|why| Error::InvalidArgument(format!("filter {f:?}: {why}")))?,
            );
        }
        Ok(Filter { any })
    }

    pub fn matches(&self, s: &Fields) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|sel| sel.matches(s)))
    }
}

impl Selector {
    fn matches(&self, s: &Fields) -> bool {
        let value = match self.path.as_slice() {
            [f] if f == "name" => Some(s.name),
            [f] if f == "parent" => Some(s.parent),
            [f] if f == "kind" => Some(s.kind),
            [f, key] if f == "labels" => s.labels.get(key).map(String::as_str),
            _ => None,
        };
        match (&self.op, value) {
            (Op::Present, v) => v.is_some_and(|v| !v.is_empty()),
            (Op::Eq(want), Some(v)) => v == want,
            (Op::Ne(want), Some(v)) => v != want,
            (Op::Ne(_), None) => true,
            (Op::Matches(re), Some(v)) => re.is_match(v),
            (_, None) => false,
        }
    }
}

fn parse_one(f: &str) -> std::result::Result<Vec<Selector>, String> {
    if f.len() > MAX_FILTER {
        return Err(format!("longer than {MAX_FILTER} bytes"));
    }
    let mut sels = Vec::new();
    let mut rest = f.trim_start();
    loop {
        let (sel, r) = selector(rest)?;
        sels.push(sel);
        rest = r.trim_start();
        match rest.strip_prefix(',') {
            Some(r) => rest = r.trim_start(),
            None if rest.is_empty() => return Ok(sels),
            None => return Err(format!("unexpected {rest:?}")),
        }
    }
}

fn selector(s: &str) -> std::result::Result<(Selector, &str), String> {
    let mut path = Vec::new();
    let mut rest = s;
    loop {
        let (part, r) = if rest.starts_with('"') {
            quoted(rest)?
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '/'))
                .unwrap_or(rest.len());
            if end == 0 {
                return Err(format!("a field name expected at {rest:?}"));
            }
            (rest[..end].to_string(), &rest[end..])
        };
        path.push(part);
        rest = r;
        match rest.strip_prefix('.') {
            Some(r) => rest = r,
            None => break,
        }
    }
    let rest = rest.trim_start();
    let (op, rest) = if let Some(r) = rest.strip_prefix("==") {
        let (v, r) = value(r)?;
        (Op::Eq(v), r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        let (v, r) = value(r)?;
        (Op::Ne(v), r)
    } else if let Some(r) = rest.strip_prefix("~=") {
        let (v, r) = value(r)?;
        let re = regex::RegexBuilder::new(&v)
            .size_limit(MAX_REGEX)
            .build()
            .map_err(|e| format!("regular expression {v:?}: {e}"))?;
        (Op::Matches(re), r)
    } else {
        (Op::Present, rest)
    };
    Ok((Selector { path, op }, rest))
}

/// A bare value (up to `,`, spaces trimmed) or a quoted one.
fn value(s: &str) -> std::result::Result<(String, &str), String> {
    let s = s.trim_start();
    if s.starts_with('"') {
        return quoted(s);
    }
    let end = s.find(',').unwrap_or(s.len());
    Ok((s[..end].trim_end().to_string(), &s[end..]))
}

/// `"…"` with `\"`, `\\`, `\n`, `\t` escapes; returns the text and the rest.
fn quoted(s: &str) -> std::result::Result<(String, &str), String> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c)) => out.push(c),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(format!("unterminated quote in {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap<'a>(name: &'a str, kind: &'a str, labels: &'a HashMap<String, String>) -> Fields<'a> {
        Fields {
            name,
            parent: "p",
            kind,
            labels,
        }
    }

    fn filter(f: &[&str]) -> Filter {
        Filter::parse(&f.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn selectors_and_and_or() {
        let mut l = HashMap::new();
        l.insert("containerd.io/gc.root".to_string(), "x".to_string());
        l.insert("team".to_string(), "a b".to_string());
        let none = HashMap::new();
        let a = snap("k8s.io/1/a", "Committed", &l);
        let b = snap("b", "Active", &none);
        assert!(filter(&[]).matches(&a) && filter(&[]).matches(&b));
        assert!(filter(&["kind==Committed"]).matches(&a));
        assert!(!filter(&["kind==Committed"]).matches(&b));
        assert!(filter(&["labels.\"containerd.io/gc.root\""]).matches(&a));
        assert!(!filter(&["labels.\"containerd.io/gc.root\""]).matches(&b));
        assert!(filter(&["labels.team==\"a b\",parent==p"]).matches(&a));
        assert!(!filter(&["labels.team==\"a b\",parent==q"]).matches(&a));
        assert!(filter(&["name~=^k8s\\.io/", "name==b"]).matches(&a));
        assert!(filter(&["name~=^k8s\\.io/", "name==b"]).matches(&b));
        assert!(filter(&["labels.team!=c"]).matches(&b), "absent != c");
        assert!(!filter(&["name!=b"]).matches(&b));
    }

    #[test]
    fn bad_filters_are_invalid_arguments() {
        for bad in ["==x", "name==\"open", "name~=(", "name==a,", "labels.\"x"] {
            let r = Filter::parse(&[bad.to_string()]);
            assert!(
                matches!(r, Err(Error::InvalidArgument(_))),
                "{bad}: {:?}",
                r.err()
            );
        }
        assert!(Filter::parse(&["x".repeat(MAX_FILTER + 1)]).is_err());
    }
}
