//! The console's languages: Fluent message catalogues that are data, not code. Each language
//! is one file, `node/data/console/<code>.ftl` (the build embeds every file there, see
//! `build.rs`); adding a language is adding a file with every message of `en.ftl` translated,
//! including its `format-*` messages, which say how it writes dates and numbers (no ICU: the
//! formatter here only puts the pieces together the way the catalogue says).
//!
//! A message missing from a catalogue is a test failure (`console::tests` checks that every
//! key the templates and the console's code use exists in every catalogue, and that no
//! catalogue has a key no one uses), never a silent fallback to English. At run time a
//! missing message (which the tests rule out) shows its key and is logged.
//!
//! To move a page's English text into the catalogues: give the page's template struct a
//! `tr: &'static Catalogue` (from `SignedIn::tr()`), write `{{ tr.t(KEY) }}` where the text
//! was, with KEY a string literal such as `page-heading` (or `tr.t1(KEY, NAME, value)` for a
//! message with one `{ $NAME }`, `tr.t2(KEY, NAME, value, NAME2, value2)` for two,
//! `tr.count(KEY, n)` for one with a plural `{ $count }`, `tr.format(KEY, &[…])` for more; a
//! key passed around as a value is written `Msg(KEY)`), and add `page-heading = …` to every `.ftl`
//! file; the test finds the keys by those calls. Numbers and dates shown go through
//! `tr.number`, `tr.decimal`, `tr.date` and `tr.datetime`.

use std::sync::LazyLock;

use fluent_bundle::concurrent::FluentBundle;
use fluent_bundle::{FluentArgs, FluentResource, FluentValue};
use kp_protocol::{Date, Timestamp};
use unic_langid::LanguageIdentifier;

/// Every catalogue file, as `(language code, Fluent text)`, embedded by `build.rs`.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/console_catalogues.rs"));

/// The language a new account gets unless told otherwise.
pub const DEFAULT_LANGUAGE: &str = "en";

/// One language's messages and its ways of writing dates and numbers.
pub struct Catalogue {
    code: &'static str,
    bundle: FluentBundle<FluentResource>,
}

impl std::fmt::Debug for Catalogue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalogue").field("code", &self.code).finish_non_exhaustive()
    }
}

/// Why a shipped catalogue cannot be used (the tests catch it before a release).
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("node/data/console/{code}.ftl: {code:?} is not a language tag: {why}")]
    Code { code: String, why: String },
    #[error("node/data/console/{code}.ftl: {why}")]
    Syntax { code: String, why: String },
}

fn load(code: &'static str, text: &'static str) -> Result<Catalogue, CatalogueError> {
    let lang: LanguageIdentifier =
        code.parse().map_err(|e| CatalogueError::Code { code: code.to_owned(), why: format!("{e}") })?;
    let resource = FluentResource::try_new(text.to_owned()).map_err(|(_, errors)| {
        CatalogueError::Syntax { code: code.to_owned(), why: format!("{errors:?}") }
    })?;
    let mut bundle = FluentBundle::new_concurrent(vec![lang]);
    // No bidi isolation marks around placeables: the pages are HTML, whose `dir` and the
    // browser's bidi algorithm handle direction; the marks would only break copy and search.
    bundle.set_use_isolating(false);
    bundle
        .add_resource(resource)
        .map_err(|errors| CatalogueError::Syntax { code: code.to_owned(), why: format!("{errors:?}") })?;
    Ok(Catalogue { code, bundle })
}

static CATALOGUES: LazyLock<Vec<Catalogue>> = LazyLock::new(|| {
    FILES
        .iter()
        .filter_map(|(code, text)| match load(code, text) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(error = %e, "a console language cannot be used");
                None
            }
        })
        .collect()
});

/// Every shipped catalogue, parsed: for the tests, which require each to load.
pub fn load_all() -> Result<Vec<Catalogue>, CatalogueError> {
    FILES.iter().map(|(code, text)| load(code, text)).collect()
}

/// The language codes the console speaks, sorted.
pub fn codes() -> Vec<&'static str> {
    CATALOGUES.iter().map(|c| c.code).collect()
}

/// Whether the console speaks `code`.
pub fn is_available(code: &str) -> bool {
    CATALOGUES.iter().any(|c| c.code == code)
}

/// The catalogue of `code`; English for a code no catalogue has (an account's language whose
/// file was removed from a later release).
pub fn catalogue(code: &str) -> &'static Catalogue {
    static EMPTY: LazyLock<Catalogue> = LazyLock::new(|| Catalogue {
        code: DEFAULT_LANGUAGE,
        bundle: FluentBundle::new_concurrent(vec![LanguageIdentifier::default()]),
    });
    CATALOGUES
        .iter()
        .find(|c| c.code == code)
        .or_else(|| CATALOGUES.iter().find(|c| c.code == DEFAULT_LANGUAGE))
        .unwrap_or(&EMPTY)
}

/// The first language of an `Accept-Language` header the console speaks (by its primary
/// subtag: `ru-RU` reads `ru`), in the order the browser gave; English when none.
pub fn negotiate(accept_language: &str) -> &'static Catalogue {
    accept_language
        .split(',')
        .take(16)
        .filter_map(|item| item.split(';').next())
        .map(|tag| tag.trim().split('-').next().unwrap_or("").to_ascii_lowercase())
        .find_map(|code| CATALOGUES.iter().find(|c| c.code == code))
        .unwrap_or_else(|| catalogue(DEFAULT_LANGUAGE))
}

impl Catalogue {
    /// The language's code, for `<html lang>`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The message `id` with `args`.
    pub fn format(&self, id: &str, args: &[(&str, FluentValue<'_>)]) -> String {
        let Some(pattern) = self.bundle.get_message(id).and_then(|m| m.value()) else {
            tracing::error!(
                language = self.code,
                message = id,
                "a console message is missing from its catalogue"
            );
            return id.to_owned();
        };
        let mut fluent_args = FluentArgs::new();
        for (k, v) in args {
            fluent_args.set(*k, v.clone());
        }
        let mut errors = Vec::new();
        let text = self.bundle.format_pattern(pattern, Some(&fluent_args), &mut errors);
        if !errors.is_empty() {
            tracing::error!(
                language = self.code,
                message = id,
                ?errors,
                "a console message failed to format"
            );
        }
        text.into_owned()
    }

    /// Whether the catalogue has the message `id`.
    pub fn has(&self, id: &str) -> bool {
        self.bundle.get_message(id).and_then(|m| m.value()).is_some()
    }

    /// The message `id`, which takes no argument.
    pub fn t(&self, id: &str) -> String {
        self.format(id, &[])
    }

    /// The message `id` with one text argument `{ $name }`.
    pub fn t1(&self, id: &str, name: &str, value: impl std::fmt::Display) -> String {
        self.format(id, &[(name, FluentValue::from(value.to_string()))])
    }

    /// The message `id` with two text arguments.
    pub fn t2(
        &self,
        id: &str,
        name: &str,
        value: impl std::fmt::Display,
        name2: &str,
        value2: impl std::fmt::Display,
    ) -> String {
        self.format(
            id,
            &[(name, FluentValue::from(value.to_string())), (name2, FluentValue::from(value2.to_string()))],
        )
    }

    /// The message `id` with a count `{ $count }`, which also picks the plural form.
    pub fn count(&self, id: &str, count: usize) -> String {
        self.format(id, &[("count", FluentValue::from(count))])
    }

    /// A date the way this language writes it (`format-date`): 2026-12-07, 07.12.2026.
    pub fn date(&self, d: Date) -> String {
        let (y, m, day) = d.ymd();
        self.format(
            "format-date",
            &[
                ("year", FluentValue::from(format!("{y:04}"))),
                ("month", FluentValue::from(format!("{m:02}"))),
                ("day", FluentValue::from(format!("{day:02}"))),
            ],
        )
    }

    /// An instant (UTC) the way this language writes it (`format-datetime`).
    pub fn datetime(&self, t: Timestamp) -> String {
        let ms = t.unix_millis().rem_euclid(86_400_000);
        let two = |n: i64| FluentValue::from(format!("{n:02}"));
        self.format(
            "format-datetime",
            &[
                ("date", FluentValue::from(self.date(t.date()))),
                ("hour", two(ms / 3_600_000)),
                ("minute", two(ms % 3_600_000 / 60_000)),
                ("second", two(ms % 60_000 / 1000)),
                ("millis", FluentValue::from(format!("{:03}", ms % 1000))),
            ],
        )
    }

    /// A decimal written as the API writes it (`1234567.50`) the way this language does:
    /// digits grouped by three with `format-group-separator`, the decimal point as
    /// `format-decimal-separator`. Anything else is shown as it is.
    pub fn decimal(&self, s: &str) -> String {
        let (sign, digits) = s.strip_prefix('-').map_or(("", s), |d| ("-", d));
        let (int, frac) = digits.split_once('.').map_or((digits, None), |(i, f)| (i, Some(f)));
        let plain = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !plain(int) || frac.is_some_and(|f| !plain(f)) {
            return s.to_owned();
        }
        let group = self.t("format-group-separator");
        let mut out = String::from(sign);
        for (i, c) in int.chars().enumerate() {
            if i > 0 && (int.len() - i) % 3 == 0 {
                out.push_str(&group);
            }
            out.push(c);
        }
        if let Some(f) = frac {
            out.push_str(&self.t("format-decimal-separator"));
            out.push_str(f);
        }
        out
    }

    /// A whole number the way this language writes it.
    pub fn number(&self, n: impl Into<u64>) -> String {
        self.decimal(&n.into().to_string())
    }

    /// Every message id of the catalogue: each line that starts a message (`id = …` at the
    /// start of a line; terms start with `-`, comments with `#`), each one the bundle has.
    pub fn ids(&self) -> Vec<String> {
        let text = FILES.iter().find(|(c, _)| *c == self.code).map_or("", |(_, t)| t);
        text.lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_alphabetic()))
            .filter_map(|l| l.split_once('=').map(|(id, _)| id.trim().to_owned()))
            .filter(|id| self.bundle.has_message(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_catalogue_loads_and_english_is_one_of_them() {
        let all = load_all().unwrap();
        assert!(all.iter().any(|c| c.code == "en") && all.iter().any(|c| c.code == "ru"));
        assert_eq!(codes(), all.iter().map(|c| c.code).collect::<Vec<_>>());
    }

    #[test]
    fn dates_and_numbers_are_written_the_way_each_language_writes_them() {
        let (en, ru) = (catalogue("en"), catalogue("ru"));
        let d = Date::from_ymd(2026, 12, 7).unwrap();
        assert_eq!(en.date(d), "2026-12-07");
        assert_eq!(ru.date(d), "07.12.2026");
        let t: Timestamp = "2026-12-07T09:05:03.250Z".parse().unwrap();
        assert_eq!(en.datetime(t), "2026-12-07T09:05:03.250Z", "English as before");
        assert_eq!(ru.datetime(t), "07.12.2026 09:05:03 UTC");
        assert_eq!(en.decimal("1234.56"), "1234.56");
        assert_eq!(ru.decimal("1234.56"), "1\u{a0}234,56");
        assert_eq!(ru.decimal("4231000.00"), "4\u{a0}231\u{a0}000,00");
        assert_eq!(ru.decimal("12"), "12");
        assert_eq!(ru.number(1_000_000u64), "1\u{a0}000\u{a0}000");
        assert_eq!(ru.decimal("twelve"), "twelve", "not a number: as it is");
        assert_eq!(catalogue("xx").code(), "en", "an unknown code reads English");
    }

    #[test]
    fn plural_forms_follow_the_language() {
        let ru = catalogue("ru");
        let forms: Vec<String> = [1, 3, 5, 21].iter().map(|&n| ru.count("issue-problems", n)).collect();
        assert!(
            forms[0] != forms[1] && forms[1] != forms[2] && forms[0] == forms[3].replace("21", "1"),
            "{forms:?}"
        );
    }
}
