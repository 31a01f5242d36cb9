//! Property tests for every codec: round trips, and hostile bytes (truncated, bit-flipped,
//! oversized) that must give an error, never a panic or a large allocation.

use kp_protocol::ed25519_dalek::SigningKey;
use kp_protocol::frame::{self, decode_frame, encode_frame, DEFAULT_MAX_FRAME_BYTES};
use kp_protocol::receipt::sign_batch;
use kp_protocol::{
    codec, Body, Certificate, CertificateContent, Declaration, Digest, Frame, Parcel, ParticipantCode, Party,
    ReceiptItem, RejectCode, Shipment, SignedDocument, Timestamp, TransportMode, Void,
};
use proptest::prelude::*;

fn code() -> impl Strategy<Value = ParticipantCode> {
    "[A-Z]{2}".prop_map(|s| s.parse().unwrap())
}

fn text() -> impl Strategy<Value = kp_protocol::Text> {
    "[A-Za-z0-9][A-Za-z0-9 ,.ÄÖЖ-]{0,40}".prop_map(|s| s.parse().unwrap())
}

fn amount<T: std::str::FromStr + std::fmt::Debug>() -> impl Strategy<Value = T>
where
    T::Err: std::fmt::Debug,
{
    (1u64..99_999_999_999_999).prop_map(|v| format!("{}.{:02}", v / 100, v % 100).parse().unwrap())
}

fn parcel() -> impl Strategy<Value = Parcel> {
    (
        prop::sample::select(kp_protocol::HsCode::ALL.to_vec()),
        amount(),
        amount(),
        prop_oneof![code().prop_map(kp_protocol::Origin::Participant), Just(kp_protocol::Origin::Mixed)],
        prop::option::of(text()),
    )
        .prop_map(|(hs_code, carats, value_usd, origin, origin_area)| Parcel {
            hs_code,
            carats,
            value_usd,
            origin,
            origin_area,
        })
}

fn date() -> impl Strategy<Value = kp_protocol::Date> {
    (2000i32..2100, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| kp_protocol::Date::from_ymd(y, m, d).unwrap())
}

/// Format 2's elements: replaces, importing member, licences, and the shipment's port of
/// entry, transport mode and document, container seals.
#[allow(clippy::type_complexity)]
fn format_2() -> impl Strategy<
    Value = (
        Option<kp_protocol::CertificateNumber>,
        Option<ParticipantCode>,
        Option<kp_protocol::Text>,
        Option<kp_protocol::Text>,
        Option<(
            Option<kp_protocol::Locode>,
            Option<TransportMode>,
            Option<kp_protocol::Text>,
            Vec<kp_protocol::Text>,
        )>,
    ),
> {
    (
        prop::option::of("[A-Z]{2}-[0-9]{1,10}".prop_map(|s| s.parse().unwrap())),
        prop::option::of(code()),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of((
            prop::option::of("[A-Z]{2}[A-Z2-9]{3}".prop_map(|s| s.parse().unwrap())),
            prop::option::of(prop::sample::select(TransportMode::ALL.to_vec())),
            prop::option::of(text()),
            prop::collection::vec(text(), 0..3),
        )),
    )
}

fn certificate() -> impl Strategy<Value = Certificate> {
    (certificate_format_1(), prop::option::of(format_2())).prop_map(|(mut c, f2)| {
        let Some((replaces, member, exporter_licence, importer_licence, ship)) = f2 else {
            return c;
        };
        c.content.replaces = replaces;
        c.content.importing_member = member;
        c.content.exporter.licence = exporter_licence;
        c.content.importer.licence = importer_licence;
        if let Some((port_of_entry, transport_mode, transport_document, container_seals)) = ship {
            let s = c.content.shipment.get_or_insert_with(Shipment::default);
            s.port_of_entry = port_of_entry;
            s.transport_mode = transport_mode;
            s.transport_document = transport_document;
            s.container_seals = container_seals;
        }
        c
    })
}

/// The layout of a certificate before format 2 (kpnode-store/1 to /3 and every certificate
/// signed then): the bincode of these fields in this order.
#[derive(bincode::Encode)]
struct Format1Layout<'a> {
    number: &'a kp_protocol::CertificateNumber,
    exporting: ParticipantCode,
    importing: ParticipantCode,
    authority: &'a kp_protocol::Text,
    exporter: (&'a kp_protocol::Text, &'a kp_protocol::Text),
    importer: (&'a kp_protocol::Text, &'a kp_protocol::Text),
    issued_on: kp_protocol::Date,
    expires_on: kp_protocol::Date,
    parcels: &'a [Parcel],
    shipment: Option<(&'a Option<kp_protocol::Text>, &'a Option<kp_protocol::Text>)>,
    declarations: &'a [Declaration],
    remarks: &'a Option<kp_protocol::LongText>,
}

fn format_1_layout(c: &Certificate) -> Vec<u8> {
    let k = &c.content;
    codec::encode(&Format1Layout {
        number: &c.number,
        exporting: k.exporting_participant,
        importing: k.importing_participant,
        authority: &k.issuing_authority,
        exporter: (&k.exporter.name, &k.exporter.address),
        importer: (&k.importer.name, &k.importer.address),
        issued_on: k.issued_on,
        expires_on: k.expires_on,
        parcels: &k.parcels,
        shipment: k.shipment.as_ref().map(|s| (&s.port_of_export, &s.customs_reference)),
        declarations: &k.declarations,
        remarks: &k.remarks,
    })
}

fn certificate_format_1() -> impl Strategy<Value = Certificate> {
    (
        (code(), code(), "[0-9]{1,20}", text(), text(), text(), text(), text()),
        (date(), date(), prop::collection::vec(parcel(), 1..20)),
        (
            prop::option::of((prop::option::of(text()), prop::option::of(text()))),
            prop::collection::vec(("[A-Za-z0-9._-]{1,32}", text()), 0..3),
            prop::option::of("[a-z][a-z \n]{0,100}"),
        ),
    )
        .prop_map(
            |((exp, imp, seq, auth, en, ea, inn, ia), (issued, expires, parcels), (ship, decls, remarks))| {
                Certificate {
                    number: format!("{exp}-{seq}").parse().unwrap(),
                    content: CertificateContent {
                        replaces: None,
                        exporting_participant: exp,
                        importing_participant: imp,
                        importing_member: None,
                        issuing_authority: auth,
                        exporter: Party { name: en, address: ea, licence: None },
                        importer: Party { name: inn, address: ia, licence: None },
                        issued_on: issued,
                        expires_on: expires,
                        parcels,
                        shipment: ship.map(|(p, c)| Shipment {
                            port_of_export: p,
                            customs_reference: c,
                            ..Shipment::default()
                        }),
                        declarations: decls
                            .into_iter()
                            .map(|(c, t)| Declaration {
                                code: c.parse().unwrap(),
                                text: t.as_str().parse().unwrap(),
                            })
                            .collect(),
                        remarks: remarks.map(|r| r.parse().unwrap()),
                    },
                }
            },
        )
}

fn document() -> impl Strategy<Value = SignedDocument> {
    (certificate(), any::<[u8; 32]>(), any::<i64>()).prop_map(|(c, seed, at)| {
        SignedDocument::sign(
            &c,
            c.content.exporting_participant,
            &SigningKey::from_bytes(&seed),
            Timestamp::from_unix_millis(at),
        )
    })
}

fn frame_strategy() -> impl Strategy<Value = Frame> {
    prop_oneof![
        (any::<u16>(), code(), "[ -~]{0,30}")
            .prop_map(|(version, participant, software)| { Frame::Hello { version, participant, software } }),
        document().prop_map(|d| Frame::Deliver { message_id: d.message_id(), document: d }),
        (1usize..20, any::<[u8; 32]>()).prop_map(|(n, seed)| {
            let items: Vec<ReceiptItem> = (0..n as u64)
                .map(|i| ReceiptItem {
                    message_id: Digest::of(&i.to_be_bytes()),
                    log_seq: i,
                    entry_hash: Digest::of(&[i as u8]),
                })
                .collect();
            let (batch, proofs) = sign_batch(
                &items,
                ParticipantCode::from_static("IN"),
                ParticipantCode::from_static("RU"),
                &SigningKey::from_bytes(&seed),
                Timestamp::from_unix_millis(1),
            )
            .unwrap();
            Frame::Receipt { batch, proofs }
        }),
        (any::<[u8; 32]>(), "[ -~]{0,100}").prop_map(|(id, detail)| Frame::reject(
            Digest(id),
            RejectCode::Conflict,
            detail
        )),
        any::<u64>().prop_map(|nonce| Frame::Ping { nonce }),
        any::<u64>().prop_map(|nonce| Frame::Pong { nonce }),
        (any::<u64>(), any::<u64>(), 0i64..4_000_000_000_000, any::<u64>(), any::<u16>()).prop_map(
            |(request_id, after_seq, since, cursor, max_items)| Frame::RecoverRequest {
                request_id,
                after_seq,
                since: Timestamp::from_unix_millis(since),
                cursor,
                max_items
            }
        ),
        (document(), any::<bool>(), any::<[u8; 32]>()).prop_map(|(document, sent, seed)| {
            let item =
                ReceiptItem { message_id: document.message_id(), log_seq: 7, entry_hash: Digest::of(b"e") };
            let (batch, mut proofs) = sign_batch(
                &[item],
                ParticipantCode::from_static("IN"),
                ParticipantCode::from_static("RU"),
                &SigningKey::from_bytes(&seed),
                Timestamp::from_unix_millis(1),
            )
            .unwrap();
            let receipt = kp_protocol::MessageReceipt { batch, proof: proofs.remove(0) };
            let item = if sent {
                kp_protocol::frame::Recovered::Sent { document, receipt }
            } else {
                kp_protocol::frame::Recovered::Received { document, receipt }
            };
            Frame::RecoverItem { request_id: 1, item: Box::new(item) }
        }),
        (any::<u64>(), proptest::option::of(any::<u64>()), any::<bool>()).prop_map(
            |(request_id, next, number)| {
                Frame::RecoverDone {
                    request_id,
                    next,
                    highest_number: number.then(|| "RU-2026-000123".parse().unwrap()),
                }
            }
        ),
    ]
}

proptest! {
    // 4096 cases: a few seconds in a debug build; PROPTEST_CASES raises it for a long run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().map_or(4096, |v| v.parse().expect("PROPTEST_CASES is a whole number")),
        ..ProptestConfig::default()
    })]

    #[test]
    fn certificates_round_trip(c in certificate()) {
        let bytes = c.to_body_bytes();
        prop_assert_eq!(Certificate::from_body_bytes(&bytes).unwrap(), c);
    }

    #[test]
    fn a_certificate_without_format_2s_elements_is_written_as_before(c in certificate_format_1()) {
        prop_assert_eq!(c.to_body_bytes(), format_1_layout(&c));
    }

    #[test]
    fn format_2_appends_to_format_1_and_a_reader_of_format_1_refuses_it(c in certificate()) {
        let bytes = c.to_body_bytes();
        let v1 = format_1_layout(&c);
        let uses_format_2 = c.content.replaces.is_some()
            || c.content.importing_member.is_some()
            || c.content.exporter.licence.is_some()
            || c.content.importer.licence.is_some()
            || c.content.shipment.as_ref().is_some_and(|s| {
                s.port_of_entry.is_some() || s.transport_mode.is_some() || s.transport_document.is_some()
                    || !s.container_seals.is_empty()
            });
        if uses_format_2 {
            // A shipment of format 2's elements only is no format 1 shipment at all.
            let only_new = c.content.shipment.as_ref().is_some_and(|s| s.port_of_export.is_none() && s.customs_reference.is_none());
            if !only_new {
                prop_assert!(bytes.starts_with(&v1));
            }
            prop_assert!(bytes.len() > v1.len());
        } else {
            prop_assert_eq!(bytes, v1);
        }
    }

    #[test]
    fn whatever_decodes_as_a_certificate_is_its_one_encoding(
        c in certificate(), pos in any::<prop::sample::Index>(), bit in 0u8..8, cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = c.to_body_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        bytes.truncate(bytes.len() - cut.index(4.min(bytes.len())));
        if let Ok(back) = Certificate::from_body_bytes(&bytes) {
            prop_assert_eq!(back.to_body_bytes(), bytes);
        }
    }

    #[test]
    fn documents_round_trip_and_verify(d in document()) {
        let bytes = d.to_bytes();
        let back = SignedDocument::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &d);
        prop_assert_eq!(back.to_bytes(), bytes);
        prop_assert!(back.body::<Certificate>().is_ok());
        prop_assert!(back.body::<Void>().is_err());
    }

    #[test]
    fn frames_round_trip(f in frame_strategy()) {
        let mut buf = Vec::new();
        encode_frame(&f, DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        let (back, used) = decode_frame(&buf, DEFAULT_MAX_FRAME_BYTES).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(back, f);
    }

    #[test]
    fn truncated_input_is_incomplete_or_an_error(f in frame_strategy(), cut in any::<prop::sample::Index>()) {
        let mut buf = Vec::new();
        encode_frame(&f, DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        let cut = cut.index(buf.len());
        // A frame cut short is "not yet complete", never a panic or a wrong frame.
        prop_assert_eq!(decode_frame(&buf[..cut], DEFAULT_MAX_FRAME_BYTES), Ok(None));
        // The body alone, cut short, is an error.
        let body = &buf[frame::LENGTH_PREFIX..];
        let cut = cut.min(body.len() - 1);
        prop_assert!(codec::decode::<Frame>(&body[..cut]).is_err());
    }

    #[test]
    fn bit_flips_never_panic(f in frame_strategy(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut buf = Vec::new();
        encode_frame(&f, DEFAULT_MAX_FRAME_BYTES, &mut buf).unwrap();
        let i = pos.index(buf.len());
        buf[i] ^= 1 << bit;
        let _ = decode_frame(&buf, DEFAULT_MAX_FRAME_BYTES);
        let _ = SignedDocument::from_bytes(&buf[frame::LENGTH_PREFIX..]);
        let _ = Certificate::from_body_bytes(&buf[frame::LENGTH_PREFIX..]);
    }

    #[test]
    fn any_change_to_a_signed_document_fails_verification(
        c in certificate(), seed in any::<[u8; 32]>(), pos in any::<prop::sample::Index>(), bit in 0u8..8,
    ) {
        let key = SigningKey::from_bytes(&seed);
        let doc = SignedDocument::sign(&c, c.content.exporting_participant, &key, Timestamp::from_unix_millis(1));
        let mut bytes = doc.to_bytes();
        let i = pos.index(bytes.len());
        bytes[i] ^= 1 << bit;
        if let Ok(changed) = SignedDocument::from_bytes(&bytes) {
            prop_assert!(changed.verify_signature(&key.verifying_key()).is_err());
        }
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frame(&bytes, DEFAULT_MAX_FRAME_BYTES);
        let _ = SignedDocument::from_bytes(&bytes);
        let _ = Certificate::from_body_bytes(&bytes);
    }
}

#[test]
fn an_oversized_length_is_refused_before_reading_the_body() {
    // Only the 4-byte prefix has arrived: the decoder must refuse, not wait for 4 GiB.
    let err = decode_frame(&[0xff, 0xff, 0xff, 0xff], DEFAULT_MAX_FRAME_BYTES).unwrap_err();
    assert!(matches!(err, frame::FrameError::TooLarge { announced: 0xffff_ffff, .. }), "{err}");
    let just_over = (DEFAULT_MAX_FRAME_BYTES + 1).to_be_bytes();
    assert!(matches!(
        decode_frame(&just_over, DEFAULT_MAX_FRAME_BYTES),
        Err(frame::FrameError::TooLarge { announced, max }) if announced == u64::from(DEFAULT_MAX_FRAME_BYTES) + 1 && max == DEFAULT_MAX_FRAME_BYTES
    ));
    let at_max = DEFAULT_MAX_FRAME_BYTES.to_be_bytes();
    assert_eq!(decode_frame(&at_max, DEFAULT_MAX_FRAME_BYTES), Ok(None));
    assert_eq!(decode_frame(&[0, 0, 0, 0], DEFAULT_MAX_FRAME_BYTES), Err(frame::FrameError::Empty));
}

#[test]
fn a_huge_inner_length_cannot_force_a_huge_allocation() {
    // A Deliver whose body claims more than the decode limit: the codec refuses it on the
    // length alone, before allocating. A decoder that allocated first would abort on 2^60,
    // and on DECODE_LIMIT + 1 would fail only later, for want of bytes ("unexpected end"):
    // the error must name the limit.
    for claimed in [1u64 << 60, codec::DECODE_LIMIT as u64 + 1] {
        let mut body = Vec::new();
        body.extend_from_slice(&1u32.to_be_bytes()); // Frame::Deliver's variant index
        body.extend_from_slice(&[0u8; 32]); // message id
        body.extend_from_slice(&0u32.to_be_bytes()); // DocumentKind::Certificate
        body.extend_from_slice(&claimed.to_be_bytes()); // body length
        match codec::decode::<Frame>(&body) {
            Err(codec::CodecError::Malformed(m)) => {
                let limit = codec::DECODE_LIMIT.to_string();
                assert!(m.contains(&limit), "{claimed}: refused, but not for the {limit}-byte limit: {m}")
            }
            other => panic!("{claimed}: {other:?}"),
        }
    }
}

#[test]
fn encoding_refuses_frames_over_the_maximum() {
    let f = Frame::Hello {
        version: 1,
        participant: ParticipantCode::from_static("RU"),
        software: "x".repeat(200),
    };
    let mut buf = vec![9];
    assert!(encode_frame(&f, 100, &mut buf).is_err());
    assert_eq!(buf, vec![9]);
}
