//! Issuing a certificate from the console: one form whose inputs are named by their JSON path
//! (`exporter.name`, `parcels[0].hs_code`), so the form and the certificate JSON are one
//! model. The urlencoded form is parsed into the very JSON value `POST /v1/certificates`
//! takes and handed to the same function ([`crate::service::issuing::submit`]): the rules,
//! the problems and their field paths are the API's and `cert validate`'s, and each problem is
//! shown at the input of the same name.
//!
//! Parcels and declarations are added and removed with submit buttons (`action=add-parcel`,
//! `action=remove-parcel-N`…), so the form works without scripts.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::Form;
use kp_protocol::registry::ParticipantStatus;
use serde_json::{Map, Value};

use super::{field, problem_text, render, Console, Msg, Nav, PageResult, SignedIn, CSRF_FIELD};
use crate::service::accounts::Action;
use crate::service::i18n::Catalogue;
use crate::service::issuing::IssueError;
use crate::service::NodeText;

/// The form field holding the button pressed; not part of the certificate.
const ACTION_FIELD: &str = "action";
/// The form field holding the form's idempotency key; not part of the certificate.
const FORM_ID_FIELD: &str = "form_id";
/// The form fields saying how many parcels and declarations the form showed (an added one
/// left empty sends no value, yet stays on the form); not part of the certificate.
const SHOWN_FIELDS: [(&str, &str, usize); 2] =
    [("parcels_shown", "parcels", MAX_PARCELS), ("declarations_shown", "declarations", MAX_DECLARATIONS)];
/// Parcels a certificate holds at most (the validator's limit); also bounds the arrays the
/// form parser builds from an index it was sent.
const MAX_PARCELS: usize = 1000;
/// Declarations a certificate holds at most (the validator's limit).
const MAX_DECLARATIONS: usize = 16;

/// The certificate's own fields the form renders, outside parcels and declarations.
/// (`replaces` is not among them: replacing a certificate is an action of its own.)
const TOP_FIELDS: [&str; 20] = [
    "number",
    "exporting_participant",
    "importing_participant",
    "importing_member",
    "issuing_authority",
    "issued_on",
    "expires_on",
    "remarks",
    "exporter.name",
    "exporter.address",
    "exporter.licence",
    "importer.name",
    "importer.address",
    "importer.licence",
    "shipment.port_of_export",
    "shipment.customs_reference",
    "shipment.port_of_entry",
    "shipment.transport_mode",
    "shipment.transport_document",
    SEALS_FIELD,
];
/// The one input holding every container seal, one a line or separated by commas: the form
/// sends it as the JSON array `shipment.container_seals`.
const SEALS_FIELD: &str = "shipment.container_seals";
/// A parcel's fields the form renders.
const PARCEL_FIELDS: [&str; 5] = ["hs_code", "carats", "value_usd", "origin", "origin_area"];
/// A declaration's fields the form renders.
const DECLARATION_FIELDS: [&str; 2] = ["code", "text"];
/// The form's control fields: `csrf`, `action`, `form_id` and the two counts.
const CONTROL_FIELDS: usize = 5;
/// Fields a form sends at most: every input of the largest form the page renders.
const MAX_FIELDS: usize = TOP_FIELDS.len()
    + MAX_PARCELS * PARCEL_FIELDS.len()
    + MAX_DECLARATIONS * DECLARATION_FIELDS.len()
    + CONTROL_FIELDS;

/// Parses urlencoded fields named by JSON path into the JSON value they describe. Only the
/// paths the form renders are taken ([`parse_path`]); an item's index is at most the number of
/// items named before it (the browser sends inputs in the page's order), so no array grows
/// beyond what the fields sent describe, and a form has at most [`MAX_FIELDS`] fields. Empty
/// values are left out (an optional field left blank is absent; a required one is reported
/// "is required" at its path by the validator). `csrf`, `action` and `form_id` are the form's,
/// not the certificate's. Every problem names the field it was sent as.
pub fn form_to_json(form: &[(String, String)]) -> Result<Value, Vec<kp_protocol::Problem>> {
    if form.len() > MAX_FIELDS {
        return Err(vec![kp_protocol::Problem::new(
            "",
            format!(
                "the form sent {} fields, more than the {MAX_FIELDS} the largest certificate form has; reload the page",
                form.len()
            ),
        )
        .coded(NodeText::FormTooManyFields { count: form.len().into(), max: MAX_FIELDS.into() })]);
    }
    let mut root = Value::Object(Map::new());
    let mut problems = Vec::new();
    // Items named so far of each array (by name, filled in or not): the next index allowed.
    let mut named: BTreeMap<&'static str, usize> = BTreeMap::new();
    for (name, value) in form {
        let control = [CSRF_FIELD, ACTION_FIELD, FORM_ID_FIELD, SHOWN_FIELDS[0].0, SHOWN_FIELDS[1].0];
        if control.contains(&name.as_str()) {
            continue;
        }
        let shown: String = name.chars().take(64).collect();
        let Some(path) = parse_path(name) else {
            problems.push(
                kp_protocol::Problem::new(
                    shown.clone(),
                    format!(
                        "the form sent a field {shown:?} that is not a certificate field; reload the page"
                    ),
                )
                .coded(NodeText::FormNotAField { name: shown.as_str().into() }),
            );
            continue;
        };
        if let Some((array, i)) = path.item {
            let next = named.entry(array).or_insert(0);
            if i > *next {
                problems.push(
                    kp_protocol::Problem::new(
                        shown,
                        format!("comes before item {} of {array} was sent; reload the page", *next + 1),
                    )
                    .coded(NodeText::FormItemOutOfOrder { item: (*next + 1).into(), array: array.into() }),
                );
                continue;
            }
            *next = (*next).max(i + 1);
        }
        if value.trim().is_empty() {
            continue;
        }
        let value = if name == SEALS_FIELD {
            match seals(value) {
                Ok(list) => list,
                Err(problem) => {
                    problems.push(problem);
                    continue;
                }
            }
        } else {
            Value::String(value.clone())
        };
        if let Err((why, text)) = set(&mut root, &path.steps, value) {
            problems.push(kp_protocol::Problem::new(shown, why).coded(text));
        }
    }
    if problems.is_empty() {
        Ok(root)
    } else {
        Err(problems)
    }
}

/// The container seals input as the JSON array of its seals: split at line breaks and
/// commas, each trimmed, empty ones dropped. More than the certificate holds is refused as
/// the validator refuses it, counted before any list is built (the text is the sender's).
fn seals(text: &str) -> Result<Value, kp_protocol::Problem> {
    use kp_protocol::certificate::MAX_CONTAINER_SEALS;
    let pieces = || text.split(['\n', ',']).map(str::trim).filter(|s| !s.is_empty());
    let count = pieces().count();
    if count > MAX_CONTAINER_SEALS {
        return Err(kp_protocol::Problem::new(
            SEALS_FIELD,
            format!("has {count} container seals; at most {MAX_CONTAINER_SEALS} are allowed"),
        )
        .coded(kp_protocol::problem::ProblemText::ContainerSealsTooMany {
            count: count.into(),
            max: MAX_CONTAINER_SEALS.into(),
        }));
    }
    Ok(Value::Array(pieces().map(|s| Value::String(s.to_owned())).collect()))
}

/// The input a problem's field is shown at: a container seal's (`shipment.container_seals[1]`)
/// at the one seals input, every other at the input of its own name.
fn input_of(field: &str) -> &str {
    match field.strip_prefix(SEALS_FIELD) {
        Some(rest) if rest.starts_with('[') => SEALS_FIELD,
        _ => field,
    }
}

/// The seal number `n` (from 1) a problem's field names, if it names one.
fn seal_number(field: &str) -> Option<usize> {
    let i = field.strip_prefix(SEALS_FIELD)?.strip_prefix('[')?.strip_suffix(']')?;
    i.parse::<usize>().ok().map(|i| i + 1)
}

/// One step of a field path: an object's key or an array's index.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
}

/// A field path the form renders, as steps.
#[derive(Debug, PartialEq)]
struct FieldPath {
    steps: Vec<Step>,
    /// The array and index of a parcel's or declaration's field.
    item: Option<(&'static str, usize)>,
}

/// `parcels[0].hs_code` as steps; `None` for any name the form does not render: a field of
/// [`TOP_FIELDS`], or a field of a parcel (index below [`MAX_PARCELS`]) or of a declaration
/// (index below [`MAX_DECLARATIONS`]).
fn parse_path(name: &str) -> Option<FieldPath> {
    if TOP_FIELDS.contains(&name) {
        let steps = name.split('.').map(|k| Step::Key(k.to_owned())).collect();
        return Some(FieldPath { steps, item: None });
    }
    let (item, key) = name.split_once('.')?;
    let (array, rest) = item.split_once('[')?;
    let (array, max, fields): (&'static str, usize, &[&str]) = match array {
        "parcels" => ("parcels", MAX_PARCELS, &PARCEL_FIELDS),
        "declarations" => ("declarations", MAX_DECLARATIONS, &DECLARATION_FIELDS),
        _ => return None,
    };
    let digits = rest.strip_suffix(']')?;
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let i: usize = digits.parse().ok()?;
    if i >= max || !fields.contains(&key) {
        return None;
    }
    Some(FieldPath {
        steps: vec![Step::Key(array.to_owned()), Step::Index(i), Step::Key(key.to_owned())],
        item: Some((array, i)),
    })
}

fn set(at: &mut Value, path: &[Step], value: Value) -> Result<(), (&'static str, NodeText)> {
    let Some((first, rest)) = path.split_first() else {
        if !at.is_null() {
            return Err(("is sent twice", NodeText::FormSentTwice));
        }
        *at = value;
        return Ok(());
    };
    let fresh = || match rest.first() {
        Some(Step::Index(_)) => Value::Array(Vec::new()),
        Some(Step::Key(_)) => Value::Object(Map::new()),
        None => Value::Null,
    };
    let next = match (first, at) {
        (Step::Key(k), Value::Object(map)) => map.entry(k.clone()).or_insert_with(fresh),
        (Step::Index(i), Value::Array(items)) => {
            if items.len() <= *i {
                // Items skipped (sent empty) are empty items, reported field by field.
                let filler = if rest.is_empty() { Value::Null } else { Value::Object(Map::new()) };
                items.resize(*i + 1, filler);
            }
            let slot = &mut items[*i];
            if slot.is_null() && !rest.is_empty() {
                *slot = fresh();
            }
            slot
        }
        _ => return Err(("is sent both as a value and as a group of fields", NodeText::FormValueAndGroup)),
    };
    set(next, rest, value)
}

/// The JSON value as `path → text`, the way the form names its inputs.
fn flatten(v: &Value, path: String, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                flatten(v, p, out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                flatten(v, format!("{path}[{i}]"), out);
            }
        }
        Value::String(s) => {
            out.insert(path, s.clone());
        }
        Value::Null => {}
        other => {
            out.insert(path, other.to_string());
        }
    }
}

/// How many items the form shows of the array `key`: as many as sent, at least `min`.
fn count(v: &Value, key: &str, min: usize) -> usize {
    v.get(key).and_then(Value::as_array).map_or(0, Vec::len).max(min)
}

/// Removes item `i` of the array `key` (the inputs after it move up one).
fn remove_item(v: &mut Value, key: &str, i: usize) {
    if let Some(items) = v.get_mut(key).and_then(Value::as_array_mut) {
        if i < items.len() {
            items.remove(i);
        }
    }
}

/// Makes the array `key` at least `len` items long (at most `max`), with empty items: the
/// items the form showed, filled in or not.
fn pad(v: &mut Value, key: &str, len: usize, max: usize) {
    let Some(map) = v.as_object_mut() else { return };
    let items = map.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(items) = items {
        if items.len() < len.min(max) {
            items.resize(len.min(max), Value::Object(Map::new()));
        }
    }
}

/// Appends an empty item to the array `key`, up to `max`.
fn add_item(v: &mut Value, key: &str, max: usize) {
    let shown = v.get(key).and_then(Value::as_array).map_or(0, Vec::len);
    pad(v, key, shown + 1, max);
}

/// One input of the form.
#[derive(Debug)]
struct Input {
    /// Its JSON path: the input's `name`.
    path: String,
    /// Its element id (the path with `.`, `[` and `]` made `-`).
    id: String,
    label: String,
    /// "text", "date", "textarea" or "select".
    kind: &'static str,
    value: String,
    hint: String,
    required: bool,
    options: Vec<Choice>,
    error: Option<String>,
    /// The ids of its error and hint, for `aria-describedby`.
    describedby: String,
}

#[derive(Debug, Clone)]
struct Choice {
    value: String,
    label: String,
}

/// A group of inputs, with its remove button if it is a parcel or a declaration.
#[derive(Debug)]
struct Section {
    legend: String,
    inputs: Vec<Input>,
    remove: Option<(String, String)>,
    /// The add button shown after this section: (action, label).
    add: Option<(String, String)>,
}

/// A problem in the summary at the top, linked to its input when it has one.
#[derive(Debug)]
struct Summary {
    field: String,
    anchor: Option<String>,
    message: String,
}

#[derive(Template)]
#[template(path = "issue.html")]
struct IssuePage {
    tr: &'static Catalogue,
    nav: Option<Nav>,
    form_id: String,
    sections: Vec<Section>,
    summary: Vec<Summary>,
    parcels_shown: usize,
    declarations_shown: usize,
}

fn input_id(path: &str) -> String {
    let mut id = String::from("f-");
    id.extend(path.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }));
    id
}

/// The form of `value`, with `problems` at their inputs.
fn page(
    console: &Console,
    signed: &SignedIn,
    form_id: String,
    value: &Value,
    problems: Vec<kp_protocol::Problem>,
) -> IssuePage {
    let mut values = BTreeMap::new();
    flatten(value, String::new(), &mut values);
    join_seals(&mut values);
    let tr = signed.tr();
    let mut errors: BTreeMap<String, String> = BTreeMap::new();
    for p in &problems {
        let mut message = problem_text(tr, p);
        if let Some(n) = seal_number(&p.field) {
            message = tr.t2("issue-container-seal-problem", "n", n, "problem", message);
        }
        errors
            .entry(input_of(&p.field).to_owned())
            .and_modify(|m| *m = format!("{m}; {message}"))
            .or_insert(message);
    }
    let mut shown = std::collections::BTreeSet::new();
    let mut input = |path: String, label: Msg, kind: &'static str, hint: Option<Msg>, required: bool| {
        shown.insert(path.clone());
        let id = input_id(&path);
        let error = errors.get(&path).cloned();
        let describedby = [(error.is_some(), "error"), (hint.is_some(), "hint")]
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, what)| format!("{id}-{what}"))
            .collect::<Vec<_>>()
            .join(" ");
        Input {
            id,
            describedby,
            label: tr.t(label.0),
            kind,
            value: values.get(&path).cloned().unwrap_or_default(),
            hint: hint.map(|h| tr.t(h.0)).unwrap_or_default(),
            required,
            options: Vec::new(),
            error,
            path,
        }
    };
    let mut sections = Vec::new();
    let mut importing =
        input("importing_participant".into(), Msg("issue-importing-participant"), "select", None, true);
    importing.options = participants(console, tr, &importing.value);
    sections.push(Section {
        legend: tr.t("issue-section-certificate"),
        inputs: vec![
            input("number".into(), Msg("issue-number"), "text", Some(Msg("issue-number-hint")), false),
            input(
                "exporting_participant".into(),
                Msg("issue-exporting-participant"),
                "text",
                Some(Msg("issue-exporting-participant-hint")),
                true,
            ),
            importing,
            input(
                "importing_member".into(),
                Msg("issue-importing-member"),
                "text",
                Some(Msg("issue-importing-member-hint")),
                false,
            ),
            input("issuing_authority".into(), Msg("issue-issuing-authority"), "text", None, true),
            input("issued_on".into(), Msg("issue-issued-on"), "date", None, true),
            input("expires_on".into(), Msg("issue-expires-on"), "date", None, true),
        ],
        remove: None,
        add: None,
    });
    for (who, legend) in
        [("exporter", Msg("issue-section-exporter")), ("importer", Msg("issue-section-importer"))]
    {
        sections.push(Section {
            legend: tr.t(legend.0),
            inputs: vec![
                input(format!("{who}.name"), Msg("issue-party-name"), "text", None, true),
                input(format!("{who}.address"), Msg("issue-party-address"), "text", None, true),
                input(
                    format!("{who}.licence"),
                    Msg("issue-party-licence"),
                    "text",
                    Some(Msg("issue-party-licence-hint")),
                    false,
                ),
            ],
            remove: None,
            add: None,
        });
    }
    let parcels = count(value, "parcels", 1);
    for i in 0..parcels {
        let mut hs = input(format!("parcels[{i}].hs_code"), Msg("issue-hs-code"), "select", None, true);
        hs.options = [
            ("", tr.t("issue-choose")),
            ("7102.10", tr.t("issue-hs-7102-10")),
            ("7102.21", tr.t("issue-hs-7102-21")),
            ("7102.31", tr.t("issue-hs-7102-31")),
        ]
        .into_iter()
        .map(|(v, label)| Choice { value: v.into(), label })
        .collect();
        sections.push(Section {
            legend: tr.t1("issue-section-parcel", "n", i + 1),
            inputs: vec![
                hs,
                input(
                    format!("parcels[{i}].carats"),
                    Msg("issue-carats"),
                    "text",
                    Some(Msg("issue-carats-hint")),
                    true,
                ),
                input(
                    format!("parcels[{i}].value_usd"),
                    Msg("issue-value-usd"),
                    "text",
                    Some(Msg("issue-value-usd-hint")),
                    true,
                ),
                input(
                    format!("parcels[{i}].origin"),
                    Msg("issue-origin"),
                    "text",
                    Some(Msg("issue-origin-hint")),
                    true,
                ),
                input(
                    format!("parcels[{i}].origin_area"),
                    Msg("issue-origin-area"),
                    "text",
                    Some(Msg("issue-origin-area-hint")),
                    false,
                ),
            ],
            remove: (parcels > 1)
                .then(|| (format!("remove-parcel-{i}"), tr.t1("issue-remove-parcel", "n", i + 1))),
            add: (i + 1 == parcels && parcels < MAX_PARCELS)
                .then(|| ("add-parcel".into(), tr.t("issue-add-parcel"))),
        });
    }
    let mut mode =
        input("shipment.transport_mode".into(), Msg("issue-transport-mode"), "select", None, false);
    mode.options = transport_modes(tr, &mode.value);
    sections.push(Section {
        legend: tr.t("issue-section-shipment"),
        inputs: vec![
            input("shipment.port_of_export".into(), Msg("issue-port-of-export"), "text", None, false),
            input("shipment.customs_reference".into(), Msg("issue-customs-reference"), "text", None, false),
            input(
                "shipment.port_of_entry".into(),
                Msg("issue-port-of-entry"),
                "text",
                Some(Msg("issue-port-of-entry-hint")),
                false,
            ),
            mode,
            input(
                "shipment.transport_document".into(),
                Msg("issue-transport-document"),
                "text",
                Some(Msg("issue-transport-document-hint")),
                false,
            ),
            input(
                SEALS_FIELD.into(),
                Msg("issue-container-seals"),
                "textarea",
                Some(Msg("issue-container-seals-hint")),
                false,
            ),
        ],
        remove: None,
        add: None,
    });
    let declarations = count(value, "declarations", 0);
    // The add button comes after the last declaration (or the shipment, if there is none).
    let add_declaration = (declarations < MAX_DECLARATIONS)
        .then(|| ("add-declaration".to_owned(), tr.t("issue-add-declaration")));
    if declarations == 0 {
        if let Some(last) = sections.last_mut() {
            last.add = add_declaration.clone();
        }
    }
    for i in 0..declarations {
        sections.push(Section {
            legend: tr.t1("issue-section-declaration", "n", i + 1),
            inputs: vec![
                input(
                    format!("declarations[{i}].code"),
                    Msg("issue-declaration-code"),
                    "text",
                    Some(Msg("issue-declaration-code-hint")),
                    true,
                ),
                input(
                    format!("declarations[{i}].text"),
                    Msg("issue-declaration-text"),
                    "textarea",
                    None,
                    true,
                ),
            ],
            remove: Some((format!("remove-declaration-{i}"), tr.t1("issue-remove-declaration", "n", i + 1))),
            add: if i + 1 == declarations { add_declaration.clone() } else { None },
        });
    }
    sections.push(Section {
        legend: tr.t("issue-section-remarks"),
        inputs: vec![input("remarks".into(), Msg("issue-remarks"), "textarea", None, false)],
        remove: None,
        add: None,
    });
    // A problem of a field the form shows is linked to it; a problem of the whole
    // certificate ("parcels", "") or of a field it does not show, only listed.
    let summary = problems
        .into_iter()
        .map(|p| Summary {
            anchor: shown.contains(input_of(&p.field)).then(|| input_id(input_of(&p.field))),
            message: problem_text(tr, &p),
            field: p.field,
        })
        .collect();
    IssuePage {
        tr,
        nav: Some(signed.nav()),
        form_id,
        sections,
        summary,
        parcels_shown: parcels,
        declarations_shown: declarations,
    }
}

/// The container seals as the seals input shows them, one a line (the flattened value names
/// each `shipment.container_seals[i]`).
fn join_seals(values: &mut BTreeMap<String, String>) {
    let prefix = format!("{SEALS_FIELD}[");
    let items: Vec<String> = values.keys().filter(|k| k.starts_with(&prefix)).cloned().collect();
    if items.is_empty() {
        return;
    }
    // In index order: `[10]` sorts before `[2]` as text.
    let mut seals: Vec<(usize, String)> = items
        .iter()
        .filter_map(|k| {
            let i = k[prefix.len()..].strip_suffix(']')?.parse().ok()?;
            Some((i, values.remove(k)?))
        })
        .collect();
    seals.sort();
    values.insert(SEALS_FIELD.to_owned(), seals.into_iter().map(|(_, s)| s).collect::<Vec<_>>().join("\n"));
}

/// The transport mode picker: none, or one of the modes by its name in the user's language.
/// A value that is not a mode (only a hand-made form sends one) stays selected, marked.
fn transport_modes(tr: &Catalogue, selected: &str) -> Vec<Choice> {
    let mut out = vec![Choice { value: String::new(), label: tr.t("issue-transport-mode-none") }];
    for m in kp_protocol::TransportMode::ALL {
        out.push(Choice { value: m.as_str().to_owned(), label: tr.t(&format!("transport-mode-{m}")) });
    }
    if !selected.is_empty() && !out.iter().any(|c| c.value == selected) {
        out.push(Choice {
            value: selected.to_owned(),
            label: tr.t1("issue-transport-mode-unknown", "mode", selected),
        });
    }
    out
}

/// The importing participant picker: the registry's participants in force today but this
/// node's own, each marked with its standing. A suspended one stays listed (marked) so the
/// officer sees why it cannot be chosen; the server refuses it, as the API does.
fn participants(console: &Console, tr: &Catalogue, selected: &str) -> Vec<Choice> {
    let registry = console.shared.registry.get();
    let on = registry.on(console.shared.now().date());
    let mut out = vec![Choice { value: String::new(), label: tr.t("issue-choose") }];
    for e in on.entries() {
        if e.code == console.shared.me {
            continue;
        }
        let (code, name) = (e.code.to_string(), e.name.to_string());
        let label = match e.status {
            ParticipantStatus::Active => format!("{code} — {name}"),
            ParticipantStatus::Suspended => tr.format(
                "issue-participant-suspended",
                &[("code", code.clone().into()), ("name", name.into())],
            ),
            ParticipantStatus::Restricted => tr.format(
                "issue-participant-restricted",
                &[("code", code.clone().into()), ("name", name.into())],
            ),
        };
        out.push(Choice { value: code, label });
    }
    // A code typed elsewhere (or no longer in force) stays selected, so it is shown back.
    if !selected.is_empty() && !out.iter().any(|c| c.value == selected) {
        out.push(Choice {
            value: selected.to_owned(),
            label: tr.t1("issue-participant-unknown", "code", selected),
        });
    }
    out
}

/// The empty form: today's date, this node's participant and authority, one parcel.
pub(super) async fn form(State(console): State<Arc<Console>>, signed: SignedIn) -> PageResult {
    signed.require(Action::Issue, Msg("forbidden-issue"))?;
    let value = serde_json::json!({
        "exporting_participant": console.shared.me.to_string(),
        "issuing_authority": console.shared.config.authority.as_str(),
        "issued_on": console.shared.now().date().to_string(),
        "parcels": [{}],
    });
    let id = super::session::random_token();
    Ok(render(&page(&console, &signed, id, &value, Vec::new())))
}

/// The form sent: CSRF, the role, then either a parcel or declaration added or removed (the
/// form shown back), or the certificate issued through the API's own submission (redirect to
/// its page) or shown back with every problem at its field (422).
pub(super) async fn submit(
    State(console): State<Arc<Console>>,
    signed: SignedIn,
    Form(form): Form<Vec<(String, String)>>,
) -> PageResult {
    signed.check_csrf(&form)?;
    signed.require(Action::Issue, Msg("forbidden-issue"))?;
    let form_id = field(&form, FORM_ID_FIELD)
        .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .map_or_else(super::session::random_token, str::to_owned);
    let mut value = match form_to_json(&form) {
        Ok(v) => v,
        Err(problems) => {
            let page = page(&console, &signed, form_id, &Value::Object(Map::new()), problems);
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response());
        }
    };
    for (shown_field, key, max) in SHOWN_FIELDS {
        let shown = field(&form, shown_field).and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        pad(&mut value, key, shown, max);
    }
    let action = field(&form, ACTION_FIELD).unwrap_or("issue");
    let index = |prefix: &str| action.strip_prefix(prefix).and_then(|i| i.parse::<usize>().ok());
    let edited = if action == "add-parcel" {
        pad(&mut value, "parcels", 1, MAX_PARCELS);
        add_item(&mut value, "parcels", MAX_PARCELS);
        true
    } else if action == "add-declaration" {
        add_item(&mut value, "declarations", MAX_DECLARATIONS);
        true
    } else if let Some(i) = index("remove-parcel-") {
        remove_item(&mut value, "parcels", i);
        true
    } else if let Some(i) = index("remove-declaration-") {
        remove_item(&mut value, "declarations", i);
        true
    } else {
        false
    };
    if edited {
        return Ok(render(&page(&console, &signed, form_id, &value, Vec::new())));
    }
    let body = value.to_string().into_bytes();
    // The form's own key: sending the same form twice (a double click)
    // answers the first certificate again instead of issuing a second one.
    let idem = kp_exchange::engine::Idempotency {
        key: format!("console-{form_id}"),
        content: kp_protocol::Digest::of(&body),
    };
    match crate::service::issuing::submit(&console.shared, &body, Some(idem), &signed.officer()).await {
        Ok(s) => {
            tracing::info!(user = %signed.account.name, certificate = %s.number, "certificate issued from the console");
            Ok(Redirect::to(&format!("/certificates/{}", s.number)).into_response())
        }
        Err(IssueError::Invalid(problems)) => {
            let page = page(&console, &signed, form_id, &value, problems);
            Ok((StatusCode::UNPROCESSABLE_ENTITY, render(&page)).into_response())
        }
        Err(e) => Err(signed.localize(crate::api::ApiError::from(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_form_is_the_json_the_api_takes() {
        let v = form_to_json(&form(&[
            ("csrf", "x"),
            ("exporter.name", "ALROSA PJSC"),
            ("parcels[0].hs_code", "7102.31"),
            ("parcels[0].carats", "1520.35"),
            ("parcels[1].carats", "310.00"),
            ("remarks", ""),
            ("action", "issue"),
        ]))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "exporter": {"name": "ALROSA PJSC"},
                "parcels": [{"hs_code": "7102.31", "carats": "1520.35"}, {"carats": "310.00"}],
            })
        );
        let mut flat = BTreeMap::new();
        flatten(&v, String::new(), &mut flat);
        assert_eq!(flat["parcels[1].carats"], "310.00");
        assert_eq!(flat["exporter.name"], "ALROSA PJSC");
    }

    #[test]
    fn malformed_names_are_refused_by_name_and_never_size_an_array() {
        for name in ["parcels[1000].carats", "parcels[].x", "Exporter.name", "a.b.c.d", "parcels[0", "x]"] {
            let e = form_to_json(&form(&[(name, "1")])).unwrap_err();
            assert!(e[0].message.contains("not a certificate field"), "{name}: {e:?}");
            assert_eq!(e[0].field, name, "a refused field is named");
        }
        let e = form_to_json(&form(&[("remarks", "x"), ("remarks", "y")])).unwrap_err();
        assert_eq!(e[0].message, "is sent twice");
    }

    #[test]
    fn only_the_paths_the_form_renders_are_taken() {
        // Any key could carry an index at any level: `a[i].b[j].c[999]` built arrays of
        // a thousand nulls each, gigabytes from a 2 MiB body.
        for name in [
            "exporter[999].name",
            "parcels[0].hs_code[999]",
            "parcels[0].x",
            "declarations[16].code",
            "declarations[0].hs_code",
            "remarks[0]",
            "exporter.name.first",
            "shipment.vessel",
            "anything",
        ] {
            let e = form_to_json(&form(&[(name, "1")])).unwrap_err();
            assert_eq!(e[0].field, name, "{name}: {e:?}");
        }
        // An index at most the number of items named before it, filled in or not.
        let e = form_to_json(&form(&[("parcels[999].carats", "1")])).unwrap_err();
        assert_eq!(e[0].field, "parcels[999].carats");
        assert!(e[0].message.contains("item 1 of parcels"), "{e:?}");
        let v = form_to_json(&form(&[("parcels[0].carats", ""), ("parcels[1].carats", "2")])).unwrap();
        assert_eq!(v["parcels"], serde_json::json!([{}, {"carats": "2"}]));
        let v =
            form_to_json(&form(&[("declarations[0].code", "WDC"), ("declarations[0].text", "t")])).unwrap();
        assert_eq!(v["declarations"][0]["text"], "t");
        // No more fields than the largest form renders.
        let many: Vec<(String, String)> =
            (0..=MAX_FIELDS).map(|_| ("remarks".to_owned(), String::new())).collect();
        let e = form_to_json(&many).unwrap_err();
        assert!(e[0].message.contains("fields, more than"), "{e:?}");
    }

    #[test]
    fn container_seals_are_one_input_sent_as_the_json_array() {
        let v = form_to_json(&form(&[
            ("shipment.container_seals", "SEAL-1\r\n SEAL-2 ,SEAL-3\n\n"),
            ("shipment.transport_mode", "air"),
            ("exporter.licence", "L-1"),
        ]))
        .unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "shipment": {"container_seals": ["SEAL-1", "SEAL-2", "SEAL-3"], "transport_mode": "air"},
                "exporter": {"licence": "L-1"},
            })
        );
        // Shown back one a line, in index order.
        let many: Vec<String> = (0..12).map(|i| format!("S{i}")).collect();
        let mut flat = BTreeMap::new();
        flatten(&serde_json::json!({"shipment": {"container_seals": many}}), String::new(), &mut flat);
        join_seals(&mut flat);
        assert_eq!(flat.len(), 1, "{flat:?}");
        assert_eq!(flat[SEALS_FIELD], many.join("\n"));
        // A problem with one seal is shown at the seals input, naming the seal.
        assert_eq!(input_of("shipment.container_seals[3]"), SEALS_FIELD);
        assert_eq!(seal_number("shipment.container_seals[3]"), Some(4));
        assert_eq!(input_of("shipment.port_of_entry"), "shipment.port_of_entry");
        assert_eq!(seal_number(SEALS_FIELD), None);
        // More seals than a certificate holds are refused before any list is built.
        let text = ",x".repeat(100_000);
        let e = form_to_json(&form(&[(SEALS_FIELD, &text)])).unwrap_err();
        assert_eq!(e[0].field, SEALS_FIELD);
        assert!(e[0].message.contains("100000 container seals; at most 16"), "{e:?}");
        // `replaces` is not on the issue form.
        let e = form_to_json(&form(&[("replaces", "RU-2026-000001")])).unwrap_err();
        assert!(e[0].message.contains("not a certificate field"), "{e:?}");
    }

    #[test]
    fn parcels_are_added_and_removed() {
        let mut v = serde_json::json!({"parcels": [{"carats": "1"}, {"carats": "2"}]});
        remove_item(&mut v, "parcels", 0);
        assert_eq!(v["parcels"], serde_json::json!([{"carats": "2"}]));
        add_item(&mut v, "parcels", MAX_PARCELS);
        assert_eq!(v["parcels"].as_array().unwrap().len(), 2);
        // An added parcel left empty sends nothing; the count the form showed keeps it.
        let mut sent = form_to_json(&form(&[("parcels[0].carats", "1"), ("parcels_shown", "3")])).unwrap();
        pad(&mut sent, "parcels", 3, MAX_PARCELS);
        assert_eq!(sent["parcels"].as_array().unwrap().len(), 3);
        pad(&mut sent, "parcels", usize::MAX, MAX_PARCELS);
        assert_eq!(sent["parcels"].as_array().unwrap().len(), MAX_PARCELS, "never beyond the limit");
        assert_eq!(input_id("parcels[0].hs_code"), "f-parcels-0--hs_code");
    }
}
