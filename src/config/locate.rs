//! Maps field paths (`memory[1].size`) to source positions and back, using
//! toml's spanned document tree.

use std::fmt;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// A table key.
    Key(String),
    /// An array index.
    Index(usize),
}

/// A path to a field in the machine file, e.g. `memory[1].size`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Step>);

impl FieldPath {
    /// The empty path (the whole file).
    pub fn root() -> Self {
        FieldPath(Vec::new())
    }

    /// Appends a key.
    pub fn key(mut self, k: &str) -> Self {
        self.0.push(Step::Key(k.to_string()));
        self
    }

    /// Appends an index.
    pub fn index(mut self, i: usize) -> Self {
        self.0.push(Step::Index(i));
        self
    }

    /// Builds a path from `section`, optional index and optional field.
    pub fn of(section: &str, index: Option<usize>, field: Option<&str>) -> Self {
        let mut p = FieldPath::root().key(section);
        if let Some(i) = index {
            p = p.index(i);
        }
        if let Some(f) = field {
            p = p.key(f);
        }
        p
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(file)");
        }
        for (n, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if n == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..floor_char_boundary(text, offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while i > 0 && !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Like [`span_of`], but for a path ending in a key, the key's own span.
pub fn key_span_of(doc: &Spanned<DeTable<'_>>, path: &FieldPath) -> Option<std::ops::Range<usize>> {
    let (Some(Step::Key(last)), Some(parent)) = (path.0.last(), path.0.len().checked_sub(1)) else {
        return span_of(doc, path);
    };
    let parent = FieldPath(path.0[..parent].to_vec());
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for step in &parent.0 {
        let next = match (step, table, value) {
            (Step::Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                .map(|(_, v)| v),
            (Step::Index(i), _, Some(v)) => v.get_ref().as_array().and_then(|a| a.get(*i)),
            _ => None,
        };
        let v = next?;
        value = Some(v);
        table = v.get_ref().as_table();
    }
    table
        .and_then(|t| t.iter().find(|(key, _)| key.get_ref().as_ref() == last.as_str()))
        .map(|(k, _)| k.span())
        .or_else(|| span_of(doc, path))
}

/// Finds the byte span of the deepest existing prefix of `path` in the
/// parsed document: the value itself, or its key when the value is a table.
pub fn span_of(doc: &Spanned<DeTable<'_>>, path: &FieldPath) -> Option<std::ops::Range<usize>> {
    let mut best: Option<std::ops::Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut value: Option<&Spanned<DeValue<'_>>> = None;
    for step in &path.0 {
        let next = match (step, table, value) {
            (Step::Key(k), Some(t), _) => t
                .iter()
                .find(|(key, _)| key.get_ref().as_ref() == k.as_str())
                .map(|(key, v)| {
                    // A key's own span reads better than a whole sub-table's.
                    // A (sub-)table or an array of tables reads best at its
                    // key; a scalar or an inline array at its value.
                    let tables = v
                        .get_ref()
                        .as_array()
                        .is_some_and(|a| a.iter().any(|i| i.get_ref().is_table()));
                    best = Some(if v.get_ref().is_table() || tables {
                        key.span()
                    } else {
                        v.span()
                    });
                    v
                }),
            (Step::Index(i), _, Some(v)) => v.get_ref().as_array().and_then(|a| {
                a.get(*i).inspect(|item| {
                    best = Some(item.span());
                })
            }),
            _ => None,
        };
        match next {
            Some(v) => {
                value = Some(v);
                table = v.get_ref().as_table();
            }
            None => break,
        }
    }
    best
}

/// Finds the field path whose key or value encloses byte span `at` most
/// tightly (deepest match wins).
pub fn path_at(doc: &Spanned<DeTable<'_>>, at: &std::ops::Range<usize>) -> FieldPath {
    type R = std::ops::Range<usize>;
    fn contains(s: &R, at: &R) -> bool {
        s.start <= at.start && at.end <= s.end.max(s.start + 1)
    }
    fn in_value(v: &Spanned<DeValue<'_>>, at: &R, path: &mut Vec<Step>) -> bool {
        match v.get_ref() {
            DeValue::Table(t) => {
                for (k, child) in t.iter() {
                    path.push(Step::Key(k.get_ref().to_string()));
                    if in_value(child, at, path) || contains(&k.span(), at) {
                        return true;
                    }
                    path.pop();
                }
                contains(&v.span(), at) && !path.is_empty()
            }
            DeValue::Array(a) => {
                for (i, item) in a.iter().enumerate() {
                    path.push(Step::Index(i));
                    if in_value(item, at, path) {
                        return true;
                    }
                    path.pop();
                }
                contains(&v.span(), at)
            }
            _ => contains(&v.span(), at),
        }
    }
    let mut path = Vec::new();
    let root = Spanned::new(doc.span(), DeValue::Table(doc.get_ref().clone()));
    in_value(&root, at, &mut path);
    FieldPath(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_display() {
        let p = FieldPath::of("memory", Some(1), Some("size"));
        assert_eq!(p.to_string(), "memory[1].size");
        assert_eq!(FieldPath::root().to_string(), "(file)");
    }

    #[test]
    fn line_and_column() {
        let t = "a = 1\nbb = 2\n";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 6), (2, 1));
        assert_eq!(line_col(t, 11), (2, 6));
    }

    #[test]
    fn spans_and_paths_round_trip() {
        let t = "[machine]\nvcpus = 2\n\n[[memory]]\nguest_addr = 0\nsize = 1\n\n[[memory]]\nguest_addr = 0x1000\nsize = \"1MiB\"\n";
        let doc = DeTable::parse(t).unwrap();
        let p = FieldPath::of("memory", Some(1), Some("size"));
        let s = span_of(&doc, &p).unwrap();
        assert_eq!(&t[s.clone()], "\"1MiB\"");
        assert_eq!(line_col(t, s.start), (10, 8));
        assert_eq!(path_at(&doc, &s), p);
        let v = span_of(&doc, &FieldPath::of("machine", None, Some("vcpus"))).unwrap();
        assert_eq!(&t[v], "2");
        // A missing field falls back to its parent.
        let m = span_of(&doc, &FieldPath::of("memory", Some(0), Some("file"))).unwrap();
        assert_eq!(&t[m.clone()], "[[memory]]");
        assert_eq!(line_col(t, m.start), (4, 1));
    }
}
