//! The signed bytes of a certificate.
//!
//! **Format 1** is the bincode of the certificate's first elements, in this order: number,
//! exporting participant, importing participant, issuing authority, exporter and importer (name
//! and address each), issued on, expires on, parcels, shipment (port of export and customs
//! reference, or none), declarations, remarks. Every certificate signed before format 2 is
//! exactly these bytes, and still is: its message id and signature do not change.
//!
//! **Format 2** appends, only when at least one of them is given, the byte `2` and then the
//! newer elements: `replaces`, `importing_member`, the exporter's and importer's licences, the
//! port of entry, the transport mode, the transport document and the container seals. A
//! certificate without any of them is written in format 1, so a node that reads only format 1
//! still reads every certificate that does not use them; one that does is refused by such a
//! node as having unexpected bytes after the end, which is what it should do with elements it
//! cannot show.
//!
//! There is one encoding of each certificate: a trailer with nothing in it, an unknown format
//! byte, or a shipment written in format 1 with no element of its own while format 2 gives it
//! elements (format 2 writes none then) are all refused.

use bincode::{Decode, Encode};

use crate::certificate::{Certificate, CertificateContent, Declaration, Parcel, Party, Shipment};
use crate::codec::{self, CodecError};
use crate::codes::{CertificateNumber, Locode, ParticipantCode, TransportMode};
use crate::date::Date;
use crate::text::{LongText, Text};

/// The byte that starts format 2's trailer.
const FORMAT_2: u8 = 2;

#[derive(Encode)]
struct PartyRef<'a> {
    name: &'a Text,
    address: &'a Text,
}

#[derive(Encode)]
struct ShipmentRef<'a> {
    port_of_export: &'a Option<Text>,
    customs_reference: &'a Option<Text>,
}

/// Format 1, borrowed for writing.
#[derive(Encode)]
struct Format1Ref<'a> {
    number: &'a CertificateNumber,
    exporting_participant: ParticipantCode,
    importing_participant: ParticipantCode,
    issuing_authority: &'a Text,
    exporter: PartyRef<'a>,
    importer: PartyRef<'a>,
    issued_on: Date,
    expires_on: Date,
    parcels: &'a [Parcel],
    shipment: Option<ShipmentRef<'a>>,
    declarations: &'a [Declaration],
    remarks: &'a Option<LongText>,
}

#[derive(Decode)]
struct PartyFormat1 {
    name: Text,
    address: Text,
}

#[derive(Decode)]
struct ShipmentFormat1 {
    port_of_export: Option<Text>,
    customs_reference: Option<Text>,
}

#[derive(Decode)]
struct Format1 {
    number: CertificateNumber,
    exporting_participant: ParticipantCode,
    importing_participant: ParticipantCode,
    issuing_authority: Text,
    exporter: PartyFormat1,
    importer: PartyFormat1,
    issued_on: Date,
    expires_on: Date,
    parcels: Vec<Parcel>,
    shipment: Option<ShipmentFormat1>,
    declarations: Vec<Declaration>,
    remarks: Option<LongText>,
}

/// Format 2's elements.
#[derive(Encode, Decode, Default, PartialEq, Eq)]
struct Format2 {
    replaces: Option<CertificateNumber>,
    importing_member: Option<ParticipantCode>,
    exporter_licence: Option<Text>,
    importer_licence: Option<Text>,
    port_of_entry: Option<Locode>,
    transport_mode: Option<TransportMode>,
    transport_document: Option<Text>,
    container_seals: Vec<Text>,
}

impl Format2 {
    fn has_shipment_elements(&self) -> bool {
        self.port_of_entry.is_some()
            || self.transport_mode.is_some()
            || self.transport_document.is_some()
            || !self.container_seals.is_empty()
    }
}

/// The canonical bytes of `cert`.
pub(crate) fn encode(cert: &Certificate) -> Vec<u8> {
    let c = &cert.content;
    // A shipment made only of format 2's elements is written there alone.
    let shipment = c
        .shipment
        .as_ref()
        .filter(|s| s.port_of_export.is_some() || s.customs_reference.is_some() || !s.has_format_2());
    let mut out = codec::encode(&Format1Ref {
        number: &cert.number,
        exporting_participant: c.exporting_participant,
        importing_participant: c.importing_participant,
        issuing_authority: &c.issuing_authority,
        exporter: PartyRef { name: &c.exporter.name, address: &c.exporter.address },
        importer: PartyRef { name: &c.importer.name, address: &c.importer.address },
        issued_on: c.issued_on,
        expires_on: c.expires_on,
        parcels: &c.parcels,
        shipment: shipment.map(|s| ShipmentRef {
            port_of_export: &s.port_of_export,
            customs_reference: &s.customs_reference,
        }),
        declarations: &c.declarations,
        remarks: &c.remarks,
    });
    let s = c.shipment.clone().unwrap_or_default();
    let format_2 = Format2 {
        replaces: c.replaces.clone(),
        importing_member: c.importing_member,
        exporter_licence: c.exporter.licence.clone(),
        importer_licence: c.importer.licence.clone(),
        port_of_entry: s.port_of_entry,
        transport_mode: s.transport_mode,
        transport_document: s.transport_document,
        container_seals: s.container_seals,
    };
    if format_2 != Format2::default() {
        codec::encode_into(&(FORMAT_2, format_2), &mut out);
    }
    out
}

/// The certificate in `bytes`, which must be the whole of its canonical encoding.
pub(crate) fn decode(bytes: &[u8]) -> Result<Certificate, CodecError> {
    let malformed = |what: &str| CodecError::Malformed(what.to_owned());
    let (v1, used): (Format1, usize) = codec::decode_prefix(bytes)?;
    let rest = &bytes[used..];
    let v2 = if rest.is_empty() {
        Format2::default()
    } else {
        let (format, v2): (u8, Format2) = codec::decode(rest)?;
        if format != FORMAT_2 {
            return Err(malformed(&format!("unknown certificate format {format} after format 1")));
        }
        if v2 == Format2::default() {
            return Err(malformed(
                "an empty format 2 trailer (a certificate without its elements is format 1)",
            ));
        }
        v2
    };
    let shipment = match v1.shipment {
        Some(s)
            if v2.has_shipment_elements() && s.port_of_export.is_none() && s.customs_reference.is_none() =>
        {
            return Err(malformed("an empty format 1 shipment beside format 2's shipment elements"));
        }
        Some(s) => Some((s.port_of_export, s.customs_reference)),
        None if v2.has_shipment_elements() => Some((None, None)),
        None => None,
    };
    let shipment = shipment.map(|(port_of_export, customs_reference)| Shipment {
        port_of_export,
        customs_reference,
        port_of_entry: v2.port_of_entry,
        transport_mode: v2.transport_mode,
        transport_document: v2.transport_document,
        container_seals: v2.container_seals,
    });
    Ok(Certificate {
        number: v1.number,
        content: CertificateContent {
            replaces: v2.replaces,
            exporting_participant: v1.exporting_participant,
            importing_participant: v1.importing_participant,
            importing_member: v2.importing_member,
            issuing_authority: v1.issuing_authority,
            exporter: Party {
                name: v1.exporter.name,
                address: v1.exporter.address,
                licence: v2.exporter_licence,
            },
            importer: Party {
                name: v1.importer.name,
                address: v1.importer.address,
                licence: v2.importer_licence,
            },
            issued_on: v1.issued_on,
            expires_on: v1.expires_on,
            parcels: v1.parcels,
            shipment,
            declarations: v1.declarations,
            remarks: v1.remarks,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::CertificateDraft;
    use crate::{AnyParticipant, ValidationContext};

    fn sample() -> Certificate {
        let ctx = ValidationContext {
            today: "2026-11-28".parse().unwrap(),
            max_validity_days: None,
            participants: &AnyParticipant,
            exporter: None,
            importer: None,
        };
        CertificateDraft::from_json(include_str!("../tests/fixtures/certificate.json"), &ctx)
            .unwrap()
            .into_certificate(|| unreachable!())
    }

    #[test]
    fn only_the_one_encoding_of_a_certificate_decodes() {
        let cert = sample();
        let v1 = encode(&cert);
        // An empty trailer, and a trailer of an unknown format.
        let mut empty = v1.clone();
        codec::encode_into(&(FORMAT_2, Format2::default()), &mut empty);
        assert!(decode(&empty).unwrap_err().to_string().contains("empty format 2"));
        let mut unknown = v1.clone();
        codec::encode_into(
            &(3u8, Format2 { transport_mode: Some(TransportMode::Air), ..Format2::default() }),
            &mut unknown,
        );
        assert!(decode(&unknown).unwrap_err().to_string().contains("unknown certificate format 3"));
        // A shipment of format 2's elements only: format 1 holds no shipment, not an empty one.
        let mut only_new = cert.clone();
        only_new.content.shipment =
            Some(Shipment { transport_mode: Some(TransportMode::Rail), ..Shipment::default() });
        let bytes = encode(&only_new);
        assert_eq!(decode(&bytes).unwrap(), only_new);
        let mut empty_v1 = cert.clone();
        empty_v1.content.shipment = Some(Shipment::default());
        let mut forged = encode(&empty_v1);
        codec::encode_into(
            &(FORMAT_2, Format2 { transport_mode: Some(TransportMode::Rail), ..Format2::default() }),
            &mut forged,
        );
        assert!(decode(&forged).unwrap_err().to_string().contains("empty format 1 shipment"));
        // An empty shipment on its own is still format 1, as it always was.
        assert_eq!(decode(&encode(&empty_v1)).unwrap(), empty_v1);
    }
}
