//! Trade statistics and partner reconciliation, as participants report them to the KP (KPCS
//! Annex III): carats, US$ and certificate counts by partner and HS code for a period, and
//! each certificate matched with its import confirmation.
//!
//! Statistics are computed from the log, so they cover exactly the certificates whose
//! delivery was acknowledged (exports: this node holds the importer's signed receipt;
//! imports: this node stored and acknowledged them). A certificate counts in the period that
//! holds its `issued_on` (or, for imports with [`Basis::Imported`], the confirmation's
//! `received_on`); voided certificates are left out (their shipment did not happen as
//! certified). Beside the partner (provenance: where the shipment came from or went to), the
//! figures are also given by country of origin (where the diamonds were mined), as the KP's
//! statistics distinguish the two; a parcel of mixed origin counts under `MIXED`. Sums are of integer hundredths, so totals match the certificates to the
//! hundredth of a carat and the cent.

use std::collections::{BTreeMap, BTreeSet};

use kp_protocol::amount::format_hundredths;
use kp_protocol::{Certificate, Date, DocumentKind, HsCode, Origin, ParticipantCode, SignedDocument, Void};
use serde::{Deserialize, Serialize};

use crate::queries::effective_status;
use crate::store::{
    decode_log, decode_record, get_record, log_key, CertRecord, CertStatus, Direction, EntryBody,
    ResolutionRecord, Storage, StoreError, Tree,
};

/// A span of days, both ends included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Period {
    /// As given: `2026-Q3`, `2026-H1`, `2026-07`, `2026`, or `2026-07-01..2026-09-30`.
    pub label: String,
    pub start: Date,
    pub end: Date,
}

impl Period {
    pub fn contains(&self, d: Date) -> bool {
        self.start <= d && d <= self.end
    }

    /// The first day of each month the period touches.
    pub fn months(&self) -> Vec<(i32, u32)> {
        let (mut y, mut m, _) = self.start.ymd();
        let (ey, em, _) = self.end.ymd();
        let mut out = Vec::new();
        while (y, m) <= (ey, em) && out.len() < 1200 {
            out.push((y, m));
            (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        }
        out
    }
}

impl std::str::FromStr for Period {
    type Err = String;
    fn from_str(s: &str) -> Result<Period, String> {
        let bad = || {
            format!(
                "{s:?} is not a period; write a quarter (2026-Q3), a half-year (2026-H1), a month (2026-07), a year (2026) or a range (2026-07-01..2026-09-30)"
            )
        };
        let month_end = |y: i32, m: u32| -> Result<Date, String> {
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Date::from_ymd(ny, nm, 1).ok().and_then(|d| d.add_days(-1)).ok_or_else(bad)
        };
        let span = |y: i32, first: u32, last: u32| -> Result<Period, String> {
            Ok(Period {
                label: s.to_owned(),
                start: Date::from_ymd(y, first, 1).map_err(|_| bad())?,
                end: month_end(y, last)?,
            })
        };
        if let Some((a, b)) = s.split_once("..") {
            let (start, end) = (a.parse::<Date>().map_err(|_| bad())?, b.parse::<Date>().map_err(|_| bad())?);
            if end < start {
                return Err(format!("{s:?}: the range ends before it starts"));
            }
            return Ok(Period { label: s.to_owned(), start, end });
        }
        let (year, rest) = match s.split_once('-') {
            Some((y, r)) => (y, Some(r)),
            None => (s, None),
        };
        if year.len() != 4 || !year.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let y: i32 = year.parse().map_err(|_| bad())?;
        match rest {
            None => span(y, 1, 12),
            Some("Q1") => span(y, 1, 3),
            Some("Q2") => span(y, 4, 6),
            Some("Q3") => span(y, 7, 9),
            Some("Q4") => span(y, 10, 12),
            Some("H1") => span(y, 1, 6),
            Some("H2") => span(y, 7, 12),
            Some(m) if m.len() == 2 && m.bytes().all(|b| b.is_ascii_digit()) => {
                let m: u32 = m.parse().map_err(|_| bad())?;
                if !(1..=12).contains(&m) {
                    return Err(bad());
                }
                span(y, m, m)
            }
            _ => Err(bad()),
        }
    }
}

/// Exports or imports.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Flow {
    Export,
    Import,
}

/// How to break the figures down.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
pub struct By {
    pub partner: bool,
    pub hs_code: bool,
}

impl std::str::FromStr for By {
    type Err = String;
    fn from_str(s: &str) -> Result<By, String> {
        let mut by = By::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "partner" => by.partner = true,
                "hs_code" => by.hs_code = true,
                other => return Err(format!("cannot break down by {other:?}; use partner, hs_code or both")),
            }
        }
        Ok(by)
    }
}

/// Which date places an import in a period. Exports always count by date of issue.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    /// The certificate's `issued_on`: exporter and importer count each certificate in the
    /// same period, so one side's exports equal the other's imports row for row, and an
    /// import counts as soon as it arrives, confirmed or not.
    #[default]
    Issued,
    /// The import confirmation's `received_on` (the date of import). An import this node has
    /// not confirmed has no date of import: it is left out and counted in
    /// [`StatsReport::unconfirmed_imports`].
    Imported,
}

impl std::str::FromStr for Basis {
    type Err = String;
    fn from_str(s: &str) -> Result<Basis, String> {
        match s {
            "issued" => Ok(Basis::Issued),
            "imported" => Ok(Basis::Imported),
            other => Err(format!(
                "{other:?} is not a basis; use issued (date of issue) or imported (date of import)"
            )),
        }
    }
}

#[derive(Clone, Copy, Default, Debug)]
struct Sums {
    certificates: u64,
    parcels: u64,
    carats: u128,
    value_usd: u128,
}

/// One row of figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Row {
    pub flow: Flow,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partner: Option<ParticipantCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub hs_code: Option<HsCode>,
    /// Certificates with at least one parcel in the row.
    pub certificates: u64,
    pub parcels: u64,
    /// Decimal strings with two decimals, summed exactly.
    pub carats: String,
    pub value_usd: String,
}

/// A union partner's figures by the member state whose node exchanged the certificates (the
/// rows by partner count them under the union).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberRow {
    pub flow: Flow,
    pub union: ParticipantCode,
    pub member: ParticipantCode,
    pub certificates: u64,
    pub parcels: u64,
    pub carats: String,
    pub value_usd: String,
}

/// Figures by country of origin (unmixed parcels; mixed ones under `MIXED`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OriginRow {
    pub flow: Flow,
    /// A participant code, or `MIXED`.
    pub origin: String,
    /// Certificates with at least one parcel of this origin.
    pub certificates: u64,
    pub parcels: u64,
    pub carats: String,
    pub value_usd: String,
}

/// Figures of one month, for charts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MonthRow {
    pub flow: Flow,
    /// `YYYY-MM`.
    pub month: String,
    pub partner: ParticipantCode,
    pub certificates: u64,
    pub carats: String,
    pub value_usd: String,
}

/// The statistics of a period.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatsReport {
    pub participant: ParticipantCode,
    pub period: Period,
    pub by: By,
    /// Which date placed imports in the period.
    #[serde(default)]
    pub basis: Basis,
    pub rows: Vec<Row>,
    /// By flow and country of origin, beside the rows by partner (provenance).
    #[serde(default)]
    pub origins: Vec<OriginRow>,
    /// Union partners (the EU, or a union participants joined) by member state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRow>,
    /// One row per flow: everything.
    pub totals: Vec<Row>,
    /// By month and partner (US$ and carats), for the chart.
    pub monthly: Vec<MonthRow>,
    /// Certificates of the period left out because they were voided.
    pub voided_excluded: u64,
    /// Certificates of the period left out because another replaced them (the replacement
    /// counts instead).
    #[serde(default)]
    pub replaced_excluded: u64,
    /// With [`Basis::Imported`]: imports left out because this node has not confirmed them
    /// (no date of import yet) although they were valid during the period (issued on or
    /// before its end, expiring on or after its start); not the voided or replaced ones, which
    /// can no longer be confirmed. Always 0 with [`Basis::Issued`].
    #[serde(default)]
    pub unconfirmed_imports: u64,
}

fn row(flow: Flow, partner: Option<ParticipantCode>, hs_code: Option<HsCode>, s: Sums) -> Row {
    Row {
        flow,
        partner,
        hs_code,
        certificates: s.certificates,
        parcels: s.parcels,
        carats: format_u128(s.carats),
        value_usd: format_u128(s.value_usd),
    }
}

/// Hundredths as a decimal string, for sums beyond u64.
pub fn format_u128(v: u128) -> String {
    match u64::try_from(v) {
        Ok(v) => format_hundredths(v),
        Err(_) => format!("{}.{:02}", v / 100, v % 100),
    }
}

/// One certificate's contribution.
struct Contribution {
    flow: Flow,
    partner: ParticipantCode,
    /// When the partner is a union: the member state whose node sent or received it.
    member: Option<ParticipantCode>,
    month: (i32, u32),
    parcels: Vec<(HsCode, Origin, u64, u64)>,
}

/// Log entries read per page, to bound memory on a large log.
const PAGE: usize = 10_000;

/// What the period's certificates contribute, by number, and which of them were voided.
struct Gathered {
    certs: BTreeMap<String, Contribution>,
    voided: BTreeSet<String>,
    /// Replaced by a certificate whose delivery is acknowledged: only the replacement counts.
    replaced: BTreeSet<String>,
    unconfirmed_imports: u64,
}

/// Computes the statistics of `period` through the indexes, so the time grows with the
/// period's certificates, not the store's: the certificates issued in the period (with
/// [`Basis::Issued`]), or (with [`Basis::Imported`]) the exports issued in it, the imports
/// confirmed with a date of import in it, and the imports waiting for a confirmation.
pub fn compute<S: Storage + ?Sized>(
    store: &S,
    me: ParticipantCode,
    period: &Period,
    by: By,
    basis: Basis,
) -> Result<StatsReport, StoreError> {
    let gathered = match basis {
        Basis::Issued => gather_indexed(store, period, None)?,
        Basis::Imported => gather_imported(store, period)?,
    };
    Ok(summarise(me, period, by, basis, gathered))
}

/// [`compute`] from the whole log, whatever the basis: what the index must agree with.
pub fn compute_from_log<S: Storage + ?Sized>(
    store: &S,
    me: ParticipantCode,
    period: &Period,
    by: By,
    basis: Basis,
) -> Result<StatsReport, StoreError> {
    Ok(summarise(me, period, by, basis, gather_from_log(store, period, basis)?))
}

/// The contribution of a certificate document the log holds (sent or received), counted on
/// `counted_on`.
fn contribution(flow: Flow, signer: ParticipantCode, cert: &Certificate, counted_on: Date) -> Contribution {
    let c = &cert.content;
    let (partner, member) = match flow {
        Flow::Export => (c.importing_participant, c.importing_member),
        // A union's certificate is signed by its member state's node.
        Flow::Import => (c.exporting_participant, Some(signer).filter(|s| *s != c.exporting_participant)),
    };
    let (y, m, _) = counted_on.ymd();
    let parcels = c
        .parcels
        .iter()
        .map(|p| (p.hs_code, p.origin, p.carats.hundredths(), p.value_usd.hundredths()))
        .collect();
    Contribution { flow, partner, member, month: (y, m), parcels }
}

/// The certificates issued in `period` (only those of flow `only`, if given), through the
/// index: each one's record says where its entry sits in the log (none: its delivery is not
/// acknowledged, so it does not count) and whether its void is in the log (outbound:
/// acknowledged by the importer; inbound: stored).
fn gather_indexed<S: Storage + ?Sized>(
    store: &S,
    period: &Period,
    only: Option<Flow>,
) -> Result<Gathered, StoreError> {
    let mut g = Gathered {
        certs: BTreeMap::new(),
        voided: BTreeSet::new(),
        replaced: BTreeSet::new(),
        unconfirmed_imports: 0,
    };
    for number in crate::store::index::numbers_issued(store, period.start, period.end)? {
        let direction = only.map(|f| if f == Flow::Export { Direction::Out } else { Direction::In });
        let Some((rec, flow, doc, cert)) = logged_certificate(store, &number, direction)? else { continue };
        if only.is_some_and(|f| f != flow) || !period.contains(cert.content.issued_on) {
            continue;
        }
        let void_logged = rec.void.as_ref().is_some_and(|v| match rec.direction {
            Direction::Out => v.acknowledged,
            _ => v.log_seq.is_some(),
        });
        if void_logged {
            g.voided.insert(number.clone());
        }
        if rec.status == CertStatus::Replaced && replacement_logged(store, &rec.number)? {
            g.replaced.insert(number.clone());
        }
        g.certs.insert(number, contribution(flow, doc.signer, &cert, cert.content.issued_on));
    }
    Ok(g)
}

/// The certificate `number` as the log holds it, with its record and its flow: `None` if its
/// delivery is not acknowledged (so it does not count), if its entry is not that certificate,
/// or if it is not of `direction` (checked before the log is read).
fn logged_certificate<S: Storage + ?Sized>(
    store: &S,
    number: &str,
    direction: Option<Direction>,
) -> Result<Option<(CertRecord, Flow, SignedDocument, Certificate)>, StoreError> {
    let Some(rec) = get_record::<CertRecord, _>(store, Tree::Certs, number.as_bytes())? else {
        return Ok(None);
    };
    if direction.is_some_and(|d| d != rec.direction) {
        return Ok(None);
    }
    let Some(seq) = rec.log_seq else { return Ok(None) };
    let Some((entry, _)) = crate::store::read_log(store, seq)? else { return Ok(None) };
    let (flow, doc) = match entry.body {
        EntryBody::Sent { document, .. } => (Flow::Export, document),
        EntryBody::Received { document, .. } => (Flow::Import, document),
        EntryBody::Recorded { .. } => return Ok(None),
    };
    if doc.kind != DocumentKind::Certificate {
        return Ok(None);
    }
    let Ok(cert) = doc.body::<Certificate>() else { return Ok(None) };
    if cert.number.as_str() != number {
        return Ok(None);
    }
    Ok(Some((rec, flow, doc, cert)))
}

/// The period's statistics by date of import, through the indexes: the exports issued in the
/// period, the imports this node confirmed with a date of import in it, and, counted apart,
/// the imports waiting for its confirmation whose validity overlaps it. What the whole log
/// gives ([`gather_from_log`]), read from the period's certificates and the waiting ones only.
fn gather_imported<S: Storage + ?Sized>(store: &S, period: &Period) -> Result<Gathered, StoreError> {
    use crate::store::index;
    let mut g = gather_indexed(store, period, Some(Flow::Export))?;
    for number in index::numbers_imported(store, period.start, period.end)? {
        let Some((rec, flow, doc, cert)) = logged_certificate(store, &number, Some(Direction::In))? else {
            continue;
        };
        // A voided import can never be confirmed: it is left out (as from the whole log).
        if flow != Flow::Import || rec.status == CertStatus::Voided {
            continue;
        }
        let Some(received_on) = rec.confirmation.as_ref().map(|c| c.received_on) else { continue };
        if !period.contains(received_on) {
            continue;
        }
        g.certs.insert(number, contribution(flow, doc.signer, &cert, received_on));
    }
    // Those expiring before the period do not overlap it.
    for number in index::numbers_awaiting(store, period.start)? {
        let Some(rec) = get_record::<CertRecord, _>(store, Tree::Certs, number.as_bytes())? else { continue };
        if rec.log_seq.is_some() && index::awaits_confirmation(&rec) && overlaps(&rec, period) {
            g.unconfirmed_imports += 1;
        }
    }
    Ok(g)
}

/// Whether the certificate of `rec` is valid during some of `period`.
fn overlaps(rec: &CertRecord, period: &Period) -> bool {
    rec.issued_on <= period.end && rec.expires_on >= period.start
}

/// The period's certificates from the whole log.
fn gather_from_log<S: Storage + ?Sized>(
    store: &S,
    period: &Period,
    basis: Basis,
) -> Result<Gathered, StoreError> {
    let mut unconfirmed_imports = 0;
    let mut certs: BTreeMap<String, Contribution> = BTreeMap::new();
    let mut voided: BTreeSet<String> = BTreeSet::new();
    let mut replaced: BTreeSet<String> = BTreeSet::new();
    let mut next = 1u64;
    loop {
        let page = store.range(Tree::Log, &log_key(next), &[0xff; 9], PAGE)?;
        let Some((last_key, _)) = page.last() else { break };
        let last = u64::from_be_bytes(last_key.get(..8).and_then(|b| b.try_into().ok()).unwrap_or([0xff; 8]));
        for (k, v) in &page {
            let (entry, _) = decode_log(k, v)?;
            let (flow, doc) = match &entry.body {
                EntryBody::Sent { document, .. } => (Flow::Export, document),
                EntryBody::Received { document, .. } => (Flow::Import, document),
                EntryBody::Recorded { .. } => continue,
            };
            match doc.kind {
                DocumentKind::Certificate => {
                    let Ok(cert) = doc.body::<Certificate>() else { continue };
                    let c = &cert.content;
                    if let Some(old) = &c.replaces {
                        replaced.insert(old.to_string());
                    }
                    let counted_on = if flow == Flow::Import && basis == Basis::Imported {
                        let rec: Option<CertRecord> =
                            get_record(store, Tree::Certs, cert.number.as_str().as_bytes())?;
                        // A voided import can never be confirmed, nor a replaced one (its
                        // replacement is confirmed): left out, not reported as waiting.
                        if rec
                            .as_ref()
                            .is_some_and(|r| matches!(r.status, CertStatus::Voided | CertStatus::Replaced))
                        {
                            continue;
                        }
                        match rec.and_then(|r| r.confirmation).map(|c| c.received_on) {
                            Some(d) => d,
                            None => {
                                if c.issued_on <= period.end && c.expires_on >= period.start {
                                    unconfirmed_imports += 1;
                                }
                                continue;
                            }
                        }
                    } else {
                        c.issued_on
                    };
                    if !period.contains(counted_on) {
                        continue;
                    }
                    certs.insert(cert.number.to_string(), contribution(flow, doc.signer, &cert, counted_on));
                }
                DocumentKind::Void => {
                    if let Ok(v) = doc.body::<Void>() {
                        voided.insert(v.certificate.to_string());
                    }
                }
                _ => {}
            }
        }
        if page.len() < PAGE || last == u64::MAX {
            break;
        }
        next = last + 1;
    }
    Ok(Gathered { certs, voided, replaced, unconfirmed_imports })
}

/// Whether the certificate that replaced `number` is in the log (its delivery acknowledged,
/// or received): until then the replaced one is what was exchanged.
fn replacement_logged<S: Storage + ?Sized>(
    store: &S,
    number: &kp_protocol::CertificateNumber,
) -> Result<bool, StoreError> {
    let key = kp_exchange::storage::replacement_key(number);
    let Some(r) = get_record::<kp_exchange::storage::ReplacementRecord, _>(store, Tree::Meta, &key)? else {
        return Ok(false);
    };
    Ok(get_record::<CertRecord, _>(store, Tree::Certs, r.by.as_str().as_bytes())?
        .is_some_and(|n| n.log_seq.is_some()))
}

/// The report of what was gathered.
fn summarise(me: ParticipantCode, period: &Period, by: By, basis: Basis, gathered: Gathered) -> StatsReport {
    let Gathered { certs, voided, replaced, unconfirmed_imports } = gathered;
    let mut detail: BTreeMap<(Flow, Option<ParticipantCode>, Option<HsCode>), Sums> = BTreeMap::new();
    let mut totals: BTreeMap<Flow, Sums> = BTreeMap::new();
    let mut monthly: BTreeMap<(Flow, (i32, u32), ParticipantCode), Sums> = BTreeMap::new();
    let mut origins: BTreeMap<(Flow, Origin), Sums> = BTreeMap::new();
    let mut members: BTreeMap<(Flow, ParticipantCode, ParticipantCode), Sums> = BTreeMap::new();
    let mut voided_excluded = 0;
    let mut replaced_excluded = 0;
    for (number, c) in &certs {
        if voided.contains(number) {
            voided_excluded += 1;
            continue;
        }
        if replaced.contains(number) {
            replaced_excluded += 1;
            continue;
        }
        let total = totals.entry(c.flow).or_default();
        let month = monthly.entry((c.flow, c.month, c.partner)).or_default();
        total.certificates += 1;
        month.certificates += 1;
        if let Some(member) = c.member {
            let m = members.entry((c.flow, c.partner, member)).or_default();
            m.certificates += 1;
            for &(_, _, carats, usd) in &c.parcels {
                m.parcels += 1;
                m.carats += u128::from(carats);
                m.value_usd += u128::from(usd);
            }
        }
        let mut keys_seen = BTreeSet::new();
        let mut origins_seen = BTreeSet::new();
        for &(hs, origin, carats, usd) in &c.parcels {
            let o = origins.entry((c.flow, origin)).or_default();
            if origins_seen.insert(origin) {
                o.certificates += 1;
            }
            o.parcels += 1;
            o.carats += u128::from(carats);
            o.value_usd += u128::from(usd);
            for s in [&mut *total, &mut *month] {
                s.parcels += 1;
                s.carats += u128::from(carats);
                s.value_usd += u128::from(usd);
            }
            let key = (c.flow, by.partner.then_some(c.partner), by.hs_code.then_some(hs));
            let d = detail.entry(key).or_default();
            if keys_seen.insert(key) {
                d.certificates += 1;
            }
            d.parcels += 1;
            d.carats += u128::from(carats);
            d.value_usd += u128::from(usd);
        }
    }
    let rows = if by.partner || by.hs_code {
        detail.into_iter().map(|((f, p, h), s)| row(f, p, h, s)).collect()
    } else {
        Vec::new()
    };
    let totals = [Flow::Export, Flow::Import]
        .into_iter()
        .map(|f| row(f, None, None, totals.get(&f).copied().unwrap_or_default()))
        .collect();
    let monthly = monthly
        .into_iter()
        .map(|((flow, (y, m), partner), s)| MonthRow {
            flow,
            month: format!("{y:04}-{m:02}"),
            partner,
            certificates: s.certificates,
            carats: format_u128(s.carats),
            value_usd: format_u128(s.value_usd),
        })
        .collect();
    let origins = origins
        .into_iter()
        .map(|((flow, origin), s)| OriginRow {
            flow,
            origin: origin.to_string(),
            certificates: s.certificates,
            parcels: s.parcels,
            carats: format_u128(s.carats),
            value_usd: format_u128(s.value_usd),
        })
        .collect();
    let members = members
        .into_iter()
        .map(|((flow, union, member), s)| MemberRow {
            flow,
            union,
            member,
            certificates: s.certificates,
            parcels: s.parcels,
            carats: format_u128(s.carats),
            value_usd: format_u128(s.value_usd),
        })
        .collect();
    StatsReport {
        participant: me,
        period: period.clone(),
        by,
        basis,
        rows,
        origins,
        members,
        totals,
        monthly,
        voided_excluded,
        replaced_excluded,
        unconfirmed_imports,
    }
}

/// The statistics as CSV: a header and one line per row, then the totals.
pub fn to_csv(r: &StatsReport) -> String {
    let mut out = String::from("flow,partner,hs_code,certificates,parcels,carats,value_usd\n");
    for row in r.rows.iter().chain(&r.totals) {
        let partner = row.partner.map(|p| p.to_string()).unwrap_or_else(|| {
            if row.hs_code.is_none() {
                "ALL".into()
            } else {
                String::new()
            }
        });
        let hs = row.hs_code.map(|h| h.to_string()).unwrap_or_default();
        let flow = match row.flow {
            Flow::Export => "export",
            Flow::Import => "import",
        };
        out.push_str(&format!(
            "{flow},{partner},{hs},{},{},{},{}\n",
            row.certificates, row.parcels, row.carats, row.value_usd
        ));
    }
    out
}

/// The HS subheadings of rough diamonds, in the order of the KP submission's columns.
const KP_HS: [HsCode; 3] = [HsCode::Unsorted, HsCode::Industrial, HsCode::NonIndustrial];

/// The statistics in the layout of the KP statistics submissions: one partner participant per
/// row, for each HS subheading (7102.10, 7102.21, 7102.31) its carats and US$, then the
/// number of certificates; exports first, then imports, each flow closed by a `TOTAL` row.
/// `None` unless the report is broken down by partner and HS code (the layout needs both).
pub fn to_kp_csv(r: &StatsReport) -> Option<String> {
    if !(r.by.partner && r.by.hs_code) {
        return None;
    }
    let mut out = String::from("flow,participant");
    for hs in KP_HS {
        out.push_str(&format!(",{hs} carats,{hs} US$"));
    }
    out.push_str(",certificates\n");
    for flow in [Flow::Export, Flow::Import] {
        let name = if flow == Flow::Export { "export" } else { "import" };
        // Per partner and HS code, in hundredths; certificates from the monthly rows, where
        // each certificate counts once (a certificate spans HS codes, never months).
        let mut cells: BTreeMap<ParticipantCode, ([(u128, u128); 3], u64)> = BTreeMap::new();
        for row in r.rows.iter().filter(|x| x.flow == flow) {
            let (Some(p), Some(hs)) = (row.partner, row.hs_code) else { continue };
            let i = KP_HS.iter().position(|h| *h == hs).unwrap_or(0);
            let c = &mut cells.entry(p).or_default().0[i];
            c.0 += parse_hundredths(&row.carats);
            c.1 += parse_hundredths(&row.value_usd);
        }
        for m in r.monthly.iter().filter(|x| x.flow == flow) {
            cells.entry(m.partner).or_default().1 += m.certificates;
        }
        let mut total = ([(0u128, 0u128); 3], 0u64);
        for (p, (sums, certificates)) in &cells {
            out.push_str(&format!("{name},{p}"));
            for (i, (carats, usd)) in sums.iter().enumerate() {
                out.push_str(&format!(",{},{}", format_u128(*carats), format_u128(*usd)));
                total.0[i].0 += carats;
                total.0[i].1 += usd;
            }
            out.push_str(&format!(",{certificates}\n"));
            total.1 += certificates;
        }
        out.push_str(&format!("{name},TOTAL"));
        for (carats, usd) in total.0 {
            out.push_str(&format!(",{},{}", format_u128(carats), format_u128(usd)));
        }
        out.push_str(&format!(",{}\n", total.1));
    }
    Some(out)
}

/// Hundredths of a decimal string this module wrote (`123.45`).
fn parse_hundredths(s: &str) -> u128 {
    let (i, f) = s.split_once('.').unwrap_or((s, "0"));
    let f = format!("{f:0<2}");
    i.parse::<u128>().unwrap_or(0) * 100 + f.get(..2).and_then(|f| f.parse::<u128>().ok()).unwrap_or(0)
}

/// A certificate that needs someone's attention.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Finding {
    pub number: String,
    pub issued_on: Date,
    pub expires_on: Date,
    /// What is wrong, for people.
    pub detail: String,
}

/// One partner's side-by-side view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PartnerReconciliation {
    pub partner: ParticipantCode,
    /// Certificates this node issued to the partner (voided and refused ones left out).
    pub sent: u64,
    /// Of those, confirmed by the partner (matching or not).
    pub confirmed: u64,
    /// Of those, not confirmed yet but still within their validity: nothing wrong yet.
    pub awaiting_confirmation: u64,
    /// Confirmations whose parcels or carats differ from the certificate, with the
    /// difference: of certificates sent (confirmed by the partner) and received (confirmed
    /// here) alike.
    pub discrepancies: Vec<Finding>,
    /// Discrepancies either side settled with a signed resolution (`kpnode cert resolve`):
    /// shown for the record, no longer needing attention.
    pub resolved: Vec<Finding>,
    /// Certificates past their expiry with no confirmation from the partner.
    pub unconfirmed_past_expiry: Vec<Finding>,
    /// Certificates the partner issued to this node.
    pub received: u64,
    /// Inbound certificates this node has not confirmed.
    pub not_confirmed_here: Vec<Finding>,
    /// Confirmations, sent or received, whose shipment arrived (`received_on`) after the
    /// certificate's `expires_on`: confirmed all the same, listed for the record and not
    /// counted as needing attention.
    pub late_arrivals: Vec<Finding>,
}

/// The reconciliation: every partner, and whether anything needs attention.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Reconciliation {
    pub participant: ParticipantCode,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    /// The day the checks were made for (expiry is judged against it).
    pub on: Date,
    pub partners: Vec<PartnerReconciliation>,
    /// How many findings in all: the command exits 1 when this is not 0.
    pub attention: u64,
    /// How many late arrivals in all (the partners' `late_arrivals`), not part of `attention`.
    pub late_arrivals: u64,
}

/// Matches each certificate with its confirmation, per partner, on the day `on`.
pub fn reconcile<S: Storage + ?Sized>(
    store: &S,
    me: ParticipantCode,
    partner: Option<ParticipantCode>,
    period: Option<&Period>,
    on: Date,
) -> Result<Reconciliation, StoreError> {
    let mut partners: BTreeMap<ParticipantCode, PartnerReconciliation> = BTreeMap::new();
    let mut take = |rec: CertRecord| -> Result<(), StoreError> {
        if partner.is_some_and(|p| p != rec.peer) || period.is_some_and(|p| !p.contains(rec.issued_on)) {
            return Ok(());
        }
        reconcile_one(store, &mut partners, rec, on)
    };
    match period {
        // The period's certificates through the index by date of issue, in number order as
        // the whole store's are.
        Some(p) => {
            let mut numbers = crate::store::index::numbers_issued(store, p.start, p.end)?;
            numbers.sort_unstable();
            for number in numbers {
                if let Some(rec) = get_record::<CertRecord, _>(store, Tree::Certs, number.as_bytes())? {
                    take(rec)?;
                }
            }
        }
        None => {
            let mut after: Vec<u8> = Vec::new();
            loop {
                let mut start = after.clone();
                start.push(0);
                let page = store.range(
                    Tree::Certs,
                    if after.is_empty() { &[] } else { &start },
                    &[0xff; 40],
                    PAGE,
                )?;
                let Some((last, _)) = page.last() else { break };
                after = last.clone();
                for (k, v) in &page {
                    take(decode_record(Tree::Certs, k, v)?)?;
                }
                if page.len() < PAGE {
                    break;
                }
            }
        }
    }
    let partners: Vec<PartnerReconciliation> = partners.into_values().collect();
    let attention = partners
        .iter()
        .map(|p| {
            (p.discrepancies.len() + p.unconfirmed_past_expiry.len() + p.not_confirmed_here.len()) as u64
        })
        .sum();
    let late_arrivals = partners.iter().map(|p| p.late_arrivals.len() as u64).sum();
    Ok(Reconciliation { participant: me, period: period.cloned(), on, partners, attention, late_arrivals })
}

/// Adds one certificate's record to its partner's side of the reconciliation.
fn reconcile_one<S: Storage + ?Sized>(
    store: &S,
    partners: &mut BTreeMap<ParticipantCode, PartnerReconciliation>,
    rec: CertRecord,
    on: Date,
) -> Result<(), StoreError> {
    let p = partners.entry(rec.peer).or_insert_with(|| PartnerReconciliation {
        partner: rec.peer,
        sent: 0,
        confirmed: 0,
        awaiting_confirmation: 0,
        discrepancies: Vec::new(),
        resolved: Vec::new(),
        unconfirmed_past_expiry: Vec::new(),
        received: 0,
        not_confirmed_here: Vec::new(),
        late_arrivals: Vec::new(),
    });
    let finding = |detail: String| Finding {
        number: rec.number.to_string(),
        issued_on: rec.issued_on,
        expires_on: rec.expires_on,
        detail,
    };
    let status = effective_status(&rec, on);
    // A discrepancy with a resolution is listed apart and does not count.
    let resolution: Option<ResolutionRecord> =
        if rec.confirmation.as_ref().is_some_and(|c| c.discrepancy.is_some()) {
            get_record(store, Tree::Meta, &crate::store::resolution_key(&rec.number))?
        } else {
            None
        };
    let discrepancy = |p: &mut PartnerReconciliation, detail: String| match &resolution {
        Some(r) => p.resolved.push(finding(format!(
            "{detail}; resolved by {} ({}) at {}: {}",
            r.participant, r.resolved_by, r.resolved_at, r.note
        ))),
        None => p.discrepancies.push(finding(detail)),
    };
    if let Some(late) = crate::queries::late_arrival(&rec).filter(|_| rec.direction != Direction::Local) {
        p.late_arrivals.push(finding(format!(
            "received on {}, {} day(s) after it expired on {}",
            late.received_on, late.days_late, rec.expires_on
        )));
    }
    match rec.direction {
        Direction::Out => {
            if matches!(rec.status, CertStatus::Voided | CertStatus::Rejected) {
                return Ok(());
            }
            p.sent += 1;
            if let Some(c) = &rec.confirmation {
                p.confirmed += 1;
                if let Some(d) = &c.discrepancy {
                    discrepancy(p, format!("confirmed on {}: {d}", c.received_on));
                }
            } else if status == CertStatus::Expired {
                p.unconfirmed_past_expiry.push(finding(format!(
                    "expired on {} with no confirmation of receipt from {}",
                    rec.expires_on, rec.peer
                )));
            } else {
                p.awaiting_confirmation += 1;
            }
        }
        Direction::In => {
            if rec.status == CertStatus::Voided {
                return Ok(());
            }
            p.received += 1;
            // The importer's side of a discrepancy: the same finding the exporter
            // has, so neither side calls the partnership reconciled alone.
            if let Some(d) = rec.confirmation.as_ref().and_then(|c| c.discrepancy.as_ref().map(|d| (c, d))) {
                discrepancy(p, format!("confirmed here on {}: {}", d.0.received_on, d.1));
            }
            if rec.confirmation.is_none() {
                let when = rec.delivered_at.map(|t| t.date().to_string()).unwrap_or_else(|| "-".into());
                p.not_confirmed_here.push(finding(format!(
                    "received {when} from {}; this node has not confirmed receipt (kpnode cert confirm)",
                    rec.peer
                )));
            }
        }
        Direction::Local => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_parse_to_their_days() {
        let p: Period = "2026-Q3".parse().unwrap();
        assert_eq!((p.start.to_string(), p.end.to_string()), ("2026-07-01".into(), "2026-09-30".into()));
        assert_eq!(p.months(), vec![(2026, 7), (2026, 8), (2026, 9)]);
        let p: Period = "2024-02".parse().unwrap();
        assert_eq!(p.end.to_string(), "2024-02-29");
        let p: Period = "2026-H2".parse().unwrap();
        assert_eq!(p.end.to_string(), "2026-12-31");
        let p: Period = "2026".parse().unwrap();
        assert_eq!(p.months().len(), 12);
        let p: Period = "2026-10-15..2026-11-02".parse().unwrap();
        assert_eq!(p.months(), vec![(2026, 10), (2026, 11)]);
        for bad in ["2026-Q5", "26-Q1", "2026-13", "2026-00", "Q3", "2026-11-02..2026-10-15", ""] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
    }

    #[test]
    fn breakdowns_parse() {
        assert_eq!("partner,hs_code".parse::<By>().unwrap(), By { partner: true, hs_code: true });
        assert_eq!("hs_code".parse::<By>().unwrap(), By { partner: false, hs_code: true });
        assert!("colour".parse::<By>().is_err());
        assert_eq!("imported".parse::<Basis>().unwrap(), Basis::Imported);
        assert_eq!("issued".parse::<Basis>().unwrap(), Basis::Issued);
        assert!("shipped".parse::<Basis>().is_err());
    }
}
