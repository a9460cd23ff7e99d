//! How one value of the config is read: a duration, a size, a whole number
//! in a range, one word of a few, a file or a folder (relative to the
//! config's folder). Each problem is reported at the value's place, and a
//! default stands in so the rest can still be checked.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use super::Validator;
use crate::config::units::{parse_duration, parse_size};

impl Validator<'_> {
    pub(super) fn duration(&mut self, raw: Option<Spanned<String>>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match parse_duration(raw.get_ref()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.report
                    .at(&raw.span(), "a duration of zero is not allowed here");
                default
            }
            Err(message) => {
                self.report.at(&raw.span(), message);
                default
            }
        }
    }

    pub(super) fn size(
        &mut self,
        raw: Option<Spanned<String>>,
        default: usize,
        min: usize,
        max: usize,
    ) -> usize {
        let Some(raw) = raw else { return default };
        match parse_size(raw.get_ref()) {
            Ok(n) if (min as u64..=max as u64).contains(&n) => n as usize,
            Ok(_) => {
                self.report.at(
                    &raw.span(),
                    format!("must be between {min} and {max} bytes"),
                );
                default
            }
            Err(message) => {
                self.report.at(&raw.span(), message);
                default
            }
        }
    }

    /// The file `raw` names (relative to the config's folder); reported at
    /// `raw`, with `problem` after its path, when there is no such file.
    pub(super) fn file(&mut self, raw: &Spanned<String>, problem: &str) -> Option<PathBuf> {
        let path = self.path(raw.get_ref());
        if path.is_file() {
            return Some(path);
        }
        self.report
            .at(&raw.span(), format!("`{}` {problem}", path.display()));
        None
    }

    pub(super) fn path(&self, text: &str) -> PathBuf {
        let path = Path::new(text);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base.join(path)
        }
    }

    /// A folder drawbridge can read (`acme_webroot`).
    pub(super) fn folder(&mut self, dir: &Spanned<String>) -> Option<std::path::PathBuf> {
        let path = self.path(dir.get_ref());
        if path.is_dir() {
            return Some(path);
        }
        self.report.at(
            &dir.span(),
            format!("`{}` is not a folder drawbridge can read", path.display()),
        );
        None
    }

    /// One of `choices` by its word; `default` when absent, `fallback`
    /// (reported) when the word is unknown.
    pub(super) fn word<T: Copy>(
        &mut self,
        key: &str,
        raw: Option<Spanned<String>>,
        choices: &[(&str, T)],
        default: T,
        fallback: T,
    ) -> T {
        let Some(raw) = raw else {
            return default;
        };
        if let Some((_, value)) = choices.iter().find(|(word, _)| word == raw.get_ref()) {
            return *value;
        }
        let words: Vec<String> = choices.iter().map(|(w, _)| format!("\"{w}\"")).collect();
        let (last, first) = words.split_last().expect("choices are given");
        let other = raw.get_ref();
        let (first, last) = (first.join(", "), last);
        self.report.at(
            &raw.span(),
            format!("unknown {key} `{other}`; use {first} or {last}"),
        );
        fallback
    }

    /// A count between `min` and `max`; `default` when absent or outside.
    pub(super) fn count(
        &mut self,
        raw: Option<Spanned<u32>>,
        default: u32,
        min: u32,
        max: u32,
    ) -> u32 {
        self.number(
            raw,
            min..=max,
            default,
            &format!("must be between {min} and {max}"),
        )
    }

    /// A whole number within `range`; `default` when absent or wrong.
    pub(super) fn number(
        &mut self,
        raw: Option<Spanned<u32>>,
        range: std::ops::RangeInclusive<u32>,
        default: u32,
        problem: &str,
    ) -> u32 {
        match raw {
            Some(n) if range.contains(n.get_ref()) => *n.get_ref(),
            Some(n) => {
                self.report.at(&n.span(), problem);
                default
            }
            None => default,
        }
    }
}
