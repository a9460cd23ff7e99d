//! Config diagnostics: one error at a `file:line:col`, and the unknown-key check
//! that walks the parsed document so that every misspelt key is reported at once.
//!
//! Owns positions and wording; owns no knowledge of what a key means.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::raw::{
    ACME_KEYS, CACHE_KEYS, GATE_KEYS, GUARD_KEYS, LIMITS_KEYS, LOG_KEYS, PATH_KEYS, SERVER_KEYS,
    SITE_KEYS, TLS_FILE_KEYS, TOP_KEYS, WIREGUARD_KEYS,
};

/// One config error with the place it points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong, then what would be valid.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Collects diagnostics for one file, turning byte spans into lines and columns.
pub struct Reporter<'a> {
    file: &'a Path,
    text: &'a str,
    /// Every diagnostic so far, in the order found.
    pub errors: Vec<Diagnostic>,
}

impl<'a> Reporter<'a> {
    /// A reporter for `text`, read from `file`.
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Reporter {
            file,
            text,
            errors: Vec::new(),
        }
    }

    /// Records `message` at the start of `span`.
    pub fn at(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let (line, col) = line_col(self.text, span.start);
        self.errors.push(Diagnostic {
            file: self.file.to_path_buf(),
            line,
            col,
            message: message.into(),
        });
    }

    /// The line and column where `span` starts.
    pub fn place(&self, span: &Range<usize>) -> super::Place {
        let (line, col) = line_col(self.text, span.start);
        super::Place { line, col }
    }

    /// Records a serde or parse error, keeping its own span when it has one.
    pub fn toml_error(&mut self, error: &toml::de::Error, fallback: &Range<usize>) {
        let span = error.span().unwrap_or_else(|| fallback.clone());
        let message = error.message().trim().replace('\n', " ");
        self.at(&span, plain(&message));
    }

    /// Reports every key of the document that no table knows, with the nearest
    /// known key as a suggestion. Returns the spans of the tables (sections and
    /// single sites) that had one: those are not deserialized, to avoid echoes.
    pub fn unknown_keys(&mut self, root: &DeTable<'_>) -> Vec<Range<usize>> {
        let mut dirty = Vec::new();
        for (key, value) in root {
            match key.get_ref().as_ref() {
                "server" => self.table_keys(value, "[server]", SERVER_KEYS, &mut dirty),
                "limits" => self.table_keys(value, "[limits]", LIMITS_KEYS, &mut dirty),
                "log" => self.table_keys(value, "[log]", LOG_KEYS, &mut dirty),
                "acme" => self.table_keys(value, "[acme]", ACME_KEYS, &mut dirty),
                "guard" => self.table_keys(value, "[guard]", GUARD_KEYS, &mut dirty),
                "cache" => self.table_keys(value, "[cache]", CACHE_KEYS, &mut dirty),
                "gate" => self.table_keys(value, "[gate]", GATE_KEYS, &mut dirty),
                "wireguard" => self.table_keys(value, "[wireguard]", WIREGUARD_KEYS, &mut dirty),
                "site" => {
                    if let DeValue::Array(sites) = value.get_ref() {
                        for site in sites {
                            self.table_keys(site, "[[site]]", SITE_KEYS, &mut dirty);
                            if let Some(DeValue::Array(paths)) =
                                site.get_ref().get("path").map(|p| p.get_ref())
                            {
                                let before = dirty.len();
                                for path in paths {
                                    self.table_keys(path, "[[site.path]]", PATH_KEYS, &mut dirty);
                                }
                                if dirty.len() > before {
                                    dirty.push(site.span());
                                }
                            }
                            if let Some(tls) = site.get_ref().get("tls") {
                                let before = dirty.len();
                                self.table_keys(
                                    tls,
                                    "a site's tls table",
                                    TLS_FILE_KEYS,
                                    &mut dirty,
                                );
                                if dirty.len() > before {
                                    dirty.push(site.span());
                                }
                            }
                        }
                    }
                }
                _ => self.unknown(key, "the top level", TOP_KEYS),
            }
        }
        dirty
    }

    fn table_keys(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        table: &str,
        known: &[&str],
        dirty: &mut Vec<Range<usize>>,
    ) {
        if let DeValue::Table(entries) = value.get_ref() {
            for (key, _) in entries {
                if !known.contains(&key.get_ref().as_ref()) {
                    self.unknown(key, table, known);
                    dirty.push(value.span());
                }
            }
        }
    }

    fn unknown(&mut self, key: &Spanned<std::borrow::Cow<'_, str>>, table: &str, known: &[&str]) {
        let name = key.get_ref().as_ref();
        let hint = match nearest(name, known) {
            Some(best) => format!("did you mean `{best}`?"),
            None => format!("valid keys are: {}", known.join(", ")),
        };
        self.at(
            &key.span(),
            format!("unknown key `{name}` in {table}; {hint}"),
        );
    }
}

/// The known key closest to `name`, if it is close enough to be a likely
/// typo, or a known key that `name` begins with or that begins with `name`
/// (`max_body_size` → `max_body`).
pub fn nearest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    let typo = known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(name, k), *k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k);
    typo.or_else(|| {
        known
            .iter()
            .filter(|k| k.len() >= 4 && (name.starts_with(**k) || k.starts_with(name)))
            .max_by_key(|k| k.len())
            .copied()
    })
}

/// The TOML library's type errors in a user's words: "expected a whole
/// number, found the text \"3\"" instead of "invalid type: string \"3\",
/// expected u32".
pub fn plain(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let Some((found, expected)) = rest.split_once(", expected ") else {
        return message.to_string();
    };
    let expected = match expected.trim() {
        "u8" | "u16" | "u32" | "u64" | "usize" | "i32" | "i64" => "a whole number",
        "a string" | "a borrowed string" => "text in quotes",
        "a sequence" => "a list, like [\"…\"]",
        "a boolean" => "true or false",
        "a map" | "struct" => "a table",
        other if other.starts_with("struct ") => "a table",
        other => other,
    };
    let found = if let Some(text) = found.strip_prefix("string ") {
        format!("the text {text}")
    } else if let Some(number) = found.strip_prefix("integer ") {
        format!("the number {}", number.trim_matches('`'))
    } else if let Some(value) = found.strip_prefix("boolean ") {
        value.trim_matches('`').to_string()
    } else if found == "sequence" {
        "a list".to_string()
    } else if found == "map" {
        "a table".to_string()
    } else {
        found.to_string()
    };
    format!("expected {expected}, found {found}")
}

/// 1-based line and character column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::{line_col, nearest};

    #[test]
    fn line_and_column_are_one_based() {
        let text = "a = 1\nbb = 2\n  ccc = 3";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 6), (2, 1));
        assert_eq!(line_col(text, 15), (3, 3));
    }

    #[test]
    fn suggestions_only_for_near_misses() {
        let known = ["upstream", "host", "hosts", "https_redirect"];
        assert_eq!(nearest("upstram", &known), Some("upstream"));
        assert_eq!(nearest("hots", &known), Some("host"));
        assert_eq!(nearest("https-redirect", &known), Some("https_redirect"));
        assert_eq!(nearest("completely_else", &known), None);
    }
}
