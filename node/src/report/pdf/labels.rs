//! The printed certificate's labels, by language: data, not code. Each language is one file,
//! `node/data/labels/<code>.toml` (the build embeds every file there), and
//! `node/data/languages.toml` says which language each participant prints in beside English.

use std::collections::BTreeMap;

use kp_protocol::{ParticipantCode, TransportMode};
use serde::{Deserialize, Serialize};

/// Every label file, as `(language code, TOML text)`, embedded by `build.rs`.
const FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/labels.rs"));

/// Participant code → language code.
const LANGUAGES: &str = include_str!("../../../data/languages.toml");

/// The language every certificate prints in.
pub const ENGLISH: &str = "en";

/// One language's labels. Every field is required, so a file that misses one is refused
/// (and the tests check every shipped file parses).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Labels {
    /// The language's own name, e.g. "Русский".
    pub language: String,
    pub title: String,
    pub statement: String,
    pub number: String,
    pub issuing_authority: String,
    pub exporting_participant: String,
    pub importing_participant: String,
    pub exporter: String,
    pub importer: String,
    pub issued_on: String,
    pub expires_on: String,
    pub parcels: String,
    pub parcel: String,
    pub hs_code: String,
    pub description: String,
    pub origin: String,
    pub carats: String,
    pub value_usd: String,
    pub total: String,
    pub number_of_parcels: String,
    pub mixed: String,
    pub hs_7102_10: String,
    pub hs_7102_21: String,
    pub hs_7102_31: String,
    pub port_of_export: String,
    pub customs_reference: String,
    pub replaces: String,
    pub importing_member: String,
    pub licence: String,
    pub port_of_entry: String,
    pub transport_mode: String,
    pub transport_document: String,
    pub container_seals: String,
    pub transport_air: String,
    pub transport_sea: String,
    pub transport_road: String,
    pub transport_rail: String,
    pub transport_post: String,
    pub transport_hand_carried: String,
    pub declarations: String,
    pub remarks: String,
    pub validation: String,
    pub signed: String,
    pub key: String,
    pub message_id: String,
    pub seal: String,
    pub seal_hint: String,
    pub void: String,
    pub voided_at: String,
    pub reason: String,
    pub page: String,
}

impl Labels {
    /// The description of an HS code of the scheme.
    pub fn hs(&self, code: &str) -> &str {
        match code {
            "7102.10" => &self.hs_7102_10,
            "7102.21" => &self.hs_7102_21,
            "7102.31" => &self.hs_7102_31,
            _ => "",
        }
    }

    /// The name of a transport mode.
    pub fn transport(&self, mode: TransportMode) -> &str {
        match mode {
            TransportMode::Air => &self.transport_air,
            TransportMode::Sea => &self.transport_sea,
            TransportMode::Road => &self.transport_road,
            TransportMode::Rail => &self.transport_rail,
            TransportMode::Post => &self.transport_post,
            TransportMode::HandCarried => &self.transport_hand_carried,
        }
    }
}

/// Why the label tables could not be read: a shipped file is broken (the tests catch it
/// before a release).
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("the label file node/data/labels/{file}.toml is invalid: {why}")]
    File { file: String, why: String },
    #[error("node/data/languages.toml is invalid: {0}")]
    Languages(String),
    #[error("node/data/languages.toml maps {participant} to {language}, which has no file node/data/labels/{language}.toml")]
    Unknown { participant: String, language: String },
}

/// The labels of language `code`, if there is a file for it.
pub fn labels(code: &str) -> Result<Option<Labels>, LabelError> {
    FILES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(c, text)| {
            toml::from_str(text).map_err(|e| LabelError::File { file: (*c).to_owned(), why: e.to_string() })
        })
        .transpose()
}

/// The languages a certificate issued by `participant` prints in: English, then the
/// participant's own language if `languages.toml` names one other than English.
pub fn for_participant(participant: ParticipantCode) -> Result<Vec<Labels>, LabelError> {
    let map: BTreeMap<String, String> =
        toml::from_str(LANGUAGES).map_err(|e| LabelError::Languages(e.to_string()))?;
    let english = labels(ENGLISH)?.ok_or_else(|| LabelError::Unknown {
        participant: "every participant".into(),
        language: ENGLISH.into(),
    })?;
    let mut out = vec![english];
    if let Some(code) = map.get(participant.as_str()).filter(|c| c.as_str() != ENGLISH) {
        let own = labels(code)?.ok_or_else(|| LabelError::Unknown {
            participant: participant.to_string(),
            language: code.clone(),
        })?;
        out.push(own);
    }
    Ok(out)
}

/// Every shipped language code, and every participant mapped to a language.
pub fn shipped() -> (Vec<&'static str>, Vec<(String, String)>) {
    let map: BTreeMap<String, String> = toml::from_str(LANGUAGES).unwrap_or_default();
    (FILES.iter().map(|(c, _)| *c).collect(), map.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_label_file_has_every_label_and_every_mapping_has_a_file() {
        let (codes, map) = shipped();
        assert!(codes.contains(&"en") && codes.contains(&"ru"), "{codes:?}");
        for code in &codes {
            let l = labels(code).unwrap().unwrap();
            assert!(!l.title.is_empty() && !l.statement.is_empty(), "{code}");
        }
        assert!(!map.is_empty());
        for (participant, language) in &map {
            let code: ParticipantCode = participant.parse().unwrap_or_else(|e| panic!("{participant}: {e}"));
            let langs = for_participant(code).unwrap();
            assert_eq!(langs.len(), if language == ENGLISH { 1 } else { 2 }, "{participant}");
        }
    }

    #[test]
    fn russia_prints_in_russian_beside_english_and_india_in_english_alone() {
        let ru = for_participant(ParticipantCode::from_static("RU")).unwrap();
        assert_eq!(ru[0].title, "Kimberley Process Certificate");
        assert_eq!(ru[1].title, "Сертификат Кимберлийского процесса");
        assert_eq!(for_participant(ParticipantCode::from_static("IN")).unwrap().len(), 1);
    }

    #[test]
    fn a_label_file_missing_a_label_or_with_an_unknown_one_is_refused() {
        let text = FILES.iter().find(|(c, _)| *c == "en").unwrap().1;
        let missing = text.replace("title = ", "# title = ");
        let e = toml::from_str::<Labels>(&missing).unwrap_err().to_string();
        assert!(e.contains("title"), "{e}");
        let extra = format!("{text}\nsubtitle = \"x\"\n");
        assert!(toml::from_str::<Labels>(&extra).is_err());
    }
}
