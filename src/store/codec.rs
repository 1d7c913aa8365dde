//! Store layer: the record codec, and the only module that names bincode, so the on-disk
//! encoding can be swapped here alone.
//!
//! A record is one format-version byte followed by the bincode 2 (`standard` configuration)
//! encoding of the value through serde. bincode's serializer reports
//! `is_human_readable() == false`, so `Timestamp` is stored as its Unix-millisecond integer and
//! `Uuid` as its 16 bytes. bincode is not self-describing: stored types must not use
//! `skip_serializing_if`, and any change to a record's shape needs a new [`FORMAT_VERSION`]
//! (or a new schema version) with a migration.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The record-format version written as the first byte of every record.
pub const FORMAT_VERSION: u8 = 1;

/// Upper bound on what decoding one record may allocate (strings, byte vectors). A corrupt
/// length prefix fails with an error instead of asking for gigabytes.
const DECODE_LIMIT: usize = 64 * 1024 * 1024;

/// Why a record could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("empty record (no format-version byte)")]
    Empty,
    #[error("unknown record format version {found} (this build reads version {supported})")]
    UnknownVersion { found: u8, supported: u8 },
    #[error("undecodable record: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    #[error("{0} unexpected trailing byte(s) after the record")]
    Trailing(usize),
    #[error("unencodable record: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

/// Encodes a record: the format-version byte, then the bincode encoding.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let body = bincode::serde::encode_to_vec(value, bincode::config::standard())?;
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a record written by [`encode`]; an unknown version, truncated input or trailing
/// bytes are errors.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version != FORMAT_VERSION {
        return Err(CodecError::UnknownVersion {
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let config = bincode::config::standard().with_limit::<DECODE_LIMIT>();
    let (value, used) = bincode::serde::decode_from_slice(body, config)?;
    if used != body.len() {
        return Err(CodecError::Trailing(body.len() - used));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::*;
    use crate::core::time::Timestamp;
    use std::collections::BTreeMap;
    use uuid::Uuid;

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(v: &T) {
        let bytes = encode(v).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        let back: T = decode(&bytes).unwrap();
        assert_eq!(&back, v);
    }

    fn sample_conversation() -> Conversation {
        Conversation {
            id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
            group_id: Uuid::from_u128(7),
            medium: Medium::Sms,
            queue: "support".into(),
            status: Status::WrapUp,
            agent: Some("alice".into()),
            last_agent: Some("alice".into()),
            customer: Customer {
                name: "Ann".into(),
                address: "+15550100".into(),
            },
            subject: Some("billing".into()),
            origin: Origin {
                kind: OriginKind::Requeue,
                previous: Some(Uuid::from_u128(3)),
            },
            queue_arrival_time: Timestamp(1_795_428_902_120),
            queue_rank: -5,
            created_at: Timestamp(1_795_428_903_000),
            ended_at: Some(Timestamp(1_795_428_999_000)),
            disconnect_party: Some(DisconnectParty::Agent),
            disconnect_reason: Some(DisconnectReason::AgentSessionLost),
            metadata: Metadata {
                script: BTreeMap::from([("reason".into(), "refund".into())]),
                memo: "called back".into(),
            },
            thread: Some(Uuid::from_u128(9)),
            offer_expires_at: None,
            declined_by: vec!["bob".into()],
            event_count: 4,
        }
    }

    #[test]
    fn every_record_type_round_trips() {
        round_trip(&sample_conversation());
        round_trip(&Event {
            at: Timestamp(1),
            event: EventKind::PromptSent,
            agent: None,
            detail: Some("hello".into()),
        });
        round_trip(&Thread {
            id: Uuid::from_u128(9),
            group_id: Uuid::from_u128(7),
            medium: Medium::Webchat,
            customer: Customer {
                name: "Ann".into(),
                address: "Ann".into(),
            },
            token_hash: Some([7; 32]),
            current: Uuid::from_u128(1),
            open: true,
            message_count: 2,
        });
        round_trip(&Message {
            id: Uuid::from_u128(11),
            from: Sender::Agent,
            text: "Hi ✓".into(),
            at: Timestamp(-1),
            delivery: Some(Delivery::Failed),
        });
        round_trip(&Session {
            id: Uuid::from_u128(12),
            user: "alice".into(),
            role: Role::Agent,
            token_hash: [1; 32],
            state: SessionState::Disconnected,
            created_at: Timestamp(5),
            disconnected_at: Some(Timestamp(6)),
            deadline: Some(Timestamp(60_006)),
        });
        round_trip(&Metadata::default());
        round_trip(&AgentRecord {
            id: "alice".into(),
            presence: Presence::NotReady,
            idle_since: [Timestamp(1), Timestamp(2), Timestamp(3)],
            bindings: vec![Binding {
                contact: "sip:alice@10.0.0.2".into(),
                expires_at: Timestamp(9),
            }],
            sip_lost: true,
        });
        round_trip(&OutboxItem {
            message_id: Uuid::from_u128(13),
            conversation_id: Uuid::from_u128(1),
            thread_id: Uuid::from_u128(9),
            medium: Medium::Email,
            to: "ann@example.com".into(),
            subject: None,
            text: "Re: billing".into(),
            agent: "alice".into(),
            created_at: Timestamp(10),
            attempts: 3,
            next_attempt_at: Timestamp(20),
        });
    }

    #[test]
    fn timestamps_and_uuids_are_stored_compactly() {
        // Not human-readable: the integer and the 16 bytes, not RFC 3339 / hyphenated strings.
        let ts = encode(&Timestamp(1_795_428_902_120)).unwrap();
        assert!(ts.len() <= 10, "timestamp took {} bytes", ts.len());
        let id = encode(&Uuid::from_u128(u128::MAX)).unwrap();
        assert!(id.len() <= 18, "uuid took {} bytes", id.len());
    }

    #[test]
    fn unknown_format_version_is_an_error() {
        let mut bytes = encode(&sample_conversation()).unwrap();
        bytes[0] = FORMAT_VERSION + 1;
        let err = decode::<Conversation>(&bytes).unwrap_err();
        assert!(
            matches!(err, CodecError::UnknownVersion { found, .. } if found == FORMAT_VERSION + 1)
        );
    }

    #[test]
    fn truncated_and_empty_records_are_errors_at_every_length() {
        let bytes = encode(&sample_conversation()).unwrap();
        assert!(matches!(
            decode::<Conversation>(&[]),
            Err(CodecError::Empty)
        ));
        for len in 1..bytes.len() {
            assert!(
                decode::<Conversation>(&bytes[..len]).is_err(),
                "length {len} decoded"
            );
        }
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut bytes = encode(&Metadata::default()).unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Metadata>(&bytes),
            Err(CodecError::Trailing(1))
        ));
    }

    #[test]
    fn a_huge_corrupt_length_prefix_is_an_error_not_an_allocation() {
        // Version byte, then a varint length of u64::MAX / 2 for the memo string's map.
        let mut bytes = vec![FORMAT_VERSION, 0];
        bytes.push(253);
        bytes.extend_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(decode::<Metadata>(&bytes).is_err());
    }
}
