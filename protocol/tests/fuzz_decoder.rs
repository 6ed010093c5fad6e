//! Property-based fuzzing of the message decoders: whatever bytes arrive, the
//! decoders never panic, refuse everything that is not validly signed (and
//! not seen before), and give back exactly what was encoded otherwise.
//!
//! # What this covers in the running processes
//!
//! Every process decodes incoming frames only through the functions fuzzed
//! here, so these properties hold for all of them:
//!
//! - **controller** (`controller/src/hub.rs`, `on_client_message` and
//!   `on_engine_message`): strips the ROUTER identity, then
//!   [`verify_frames`] on the rest; messages with one routing frame are
//!   forwarded as verified frames, the others go through
//!   [`RawMessage::from_verified_frames`] + [`Message::from_raw`] (modelled
//!   by `controller_decode` below).
//! - **engine** (`engine/src/io.rs`: registration and `spawn_reader`):
//!   [`Session::decode`]; buffers that came through `/dev/shm` are read back
//!   by [`shm::import_buffers`] on the request's (signed) metadata
//!   (`engine/src/python.rs`).
//! - **kernel** (`kernel/src/sockets.rs` `spawn_reader`, used by
//!   `kernel/src/server.rs` for shell, control and stdin; the sessions of
//!   the three channels are clones sharing one [`Signer`], so one replay
//!   guard): [`Session::decode`]. The heartbeat channel only echoes bytes
//!   back and decodes nothing; IOPub only sends.
//! - the client inside the kernel (`directview/src/connection.rs`):
//!   [`Session::decode`], then [`shm::import`].
//!
//! # Properties
//!
//! - arbitrary multipart input (0..12 frames of random bytes, delimiters,
//!   JSON-looking frames and signature-looking hex) is refused by every
//!   entry point, and all entry points agree;
//! - a valid message mutated in any way (a flipped byte in a signed part,
//!   wrong / empty / truncated / other-key signatures, frames dropped,
//!   inserted or swapped, the delimiter removed) is accepted exactly when
//!   the signature and the concatenation of the four signed parts are
//!   unchanged (HMAC is over the concatenation, as in jupyter_client:
//!   identities and buffers are not signed, by the protocol's design);
//! - any bytes with a correct signature never panic the JSON layer, and a
//!   message is only accepted when every part is JSON and the content an
//!   object;
//! - a valid message decoded twice with one signer is refused the second
//!   time (also with other identities or buffers); the signature in upper
//!   case is refused always;
//! - unknown message types decode (routing decides what to do with them);
//! - oversize JSON parts are refused before anything is verified or parsed;
//! - encode → decode gives back the same message (Session and RawMessage);
//! - shared-memory metadata naming anything but `/dev/shm/rparallel-*` is
//!   refused without touching the file named.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use proptest::collection::{hash_map, vec};
use proptest::prelude::*;
use rparallel_protocol::shm;
use rparallel_protocol::sign::SignatureError;
use rparallel_protocol::wire::{WireError, MAX_JSON_PART};
use rparallel_protocol::{verify_frames, Header, Message, RawMessage, Session, Signer, DELIMITER};
use serde_json::{json, Map, Value};

const KEY: &[u8] = b"b5c1f3a2-fuzz-key";

// ---------------------------------------------------------------- helpers

/// What the decoding entry points made of one input, each with a fresh
/// signer (so the replay guard does not interfere).
#[derive(Debug)]
struct Outcome {
    /// `verify_frames` / `RawMessage::from_frames` accepted the signature.
    verified: bool,
    /// `Session::decode` accepted the whole message.
    decoded: Option<Message>,
}

fn zmq(frames: &[Bytes]) -> Option<zeromq::ZmqMessage> {
    zeromq::ZmqMessage::try_from(frames.to_vec()).ok()
}

/// The controller's path: a ROUTER socket puts the sender's identity first;
/// the hub verifies the rest and splits with `from_verified_frames`.
fn controller_decode(frames: &[Bytes], signer: &Signer) -> Result<Message, WireError> {
    let mut with_peer = vec![Bytes::from_static(b"\x00peer")];
    with_peer.extend_from_slice(frames);
    let split = verify_frames(&with_peer[1..], signer)? + 1;
    Message::from_raw(RawMessage::from_verified_frames(with_peer, split))
}

/// Runs every entry point on `frames` and checks they agree.
fn decode_everywhere(frames: &[Bytes], key: &[u8]) -> Outcome {
    let verify = verify_frames(frames, &Signer::new(key));
    let raw = RawMessage::from_frames(frames.to_vec(), &Signer::new(key));
    assert_eq!(verify.is_ok(), raw.is_ok(), "verify_frames vs from_frames");
    if let Ok(split) = &verify {
        assert_eq!(frames[*split].as_ref(), DELIMITER);
        assert!(frames[..*split].iter().all(|f| f.as_ref() != DELIMITER));
    }
    // Parsing an unverified RawMessage must not panic either.
    if let Ok(raw) = &raw {
        let _ = Message::from_raw(raw.clone());
    }
    let parsed = raw.and_then(Message::from_raw);
    let controller = controller_decode(frames, &Signer::new(key));
    assert_eq!(
        parsed.is_ok(),
        controller.is_ok(),
        "controller path differs"
    );
    let decoded = match zmq(frames) {
        Some(message) => Session::new(key, "fuzz").decode(message).ok(),
        None => {
            assert!(frames.is_empty());
            None
        }
    };
    assert_eq!(parsed.is_ok(), decoded.is_some(), "Session::decode differs");
    if let (Ok(a), Some(b)) = (&controller, &decoded) {
        assert_same(a, b, false);
    }
    Outcome {
        verified: verify.is_ok(),
        decoded,
    }
}

fn assert_same(a: &Message, b: &Message, with_routing: bool) {
    assert_eq!(a.header, b.header);
    assert_eq!(a.parent_header, b.parent_header);
    assert_eq!(a.metadata, b.metadata);
    assert_eq!(a.content, b.content);
    if with_routing {
        assert_eq!(a.identities, b.identities);
        assert_eq!(a.buffers, b.buffers);
    }
}

fn signed_frames(
    ids: &[Bytes],
    parts: [&[u8]; 4],
    buffers: &[Bytes],
    signer: &Signer,
) -> Vec<Bytes> {
    let raw = RawMessage {
        identities: ids.to_vec(),
        header: Bytes::copy_from_slice(parts[0]),
        parent_header: Bytes::copy_from_slice(parts[1]),
        metadata: Bytes::copy_from_slice(parts[2]),
        content: Bytes::copy_from_slice(parts[3]),
        buffers: buffers.to_vec(),
    };
    raw.into_frames(signer)
}

/// The signature and the concatenated signed parts that the decoder will
/// look at (first delimiter), if the frames have that shape at all.
fn signed_view(frames: &[Bytes]) -> Option<(Vec<u8>, Vec<u8>)> {
    let split = frames.iter().position(|f| f.as_ref() == DELIMITER)?;
    let rest = &frames[split + 1..];
    if rest.len() < 5 {
        return None;
    }
    // Signatures are lowercase hex, as signed (jupyter_client compares
    // the hex strings, so an upper-case copy is not the same signature).
    if rest[0].iter().any(u8::is_ascii_uppercase) {
        return None;
    }
    let signature = hex::decode(&rest[0]).ok().filter(|s| s.len() == 32)?;
    Some((signature, rest[1..5].concat()))
}

// ------------------------------------------------------------- strategies

fn arb_string() -> impl Strategy<Value = String> {
    vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        // Floats: see `floats_round_trip`.
        (-1.0e6f64..1.0e6).prop_map(|f| json!((f * 1000.0).round() / 1000.0)),
        arb_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::Array),
            hash_map(arb_string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_object() -> impl Strategy<Value = Value> {
    hash_map(arb_string(), arb_json(), 0..6).prop_map(|m| Value::Object(m.into_iter().collect()))
}

const HEADER_FIELDS: [&str; 6] = [
    "msg_id", "msg_type", "session", "username", "date", "version",
];

fn arb_header() -> impl Strategy<Value = Header> {
    (
        arb_string(),
        // Known and unknown message types alike.
        prop_oneof![
            Just("execute_request".to_string()),
            Just("apply_request".to_string()),
            Just("registration_request".to_string()),
            Just("heartbeat".to_string()),
            arb_string(),
        ],
        arb_string(),
        arb_string(),
        arb_string(),
        arb_string(),
        hash_map(arb_string(), arb_json(), 0..4),
    )
        .prop_map(
            |(msg_id, msg_type, session, username, date, version, extra)| Header {
                msg_id,
                msg_type,
                session,
                username,
                date,
                version,
                extra: extra
                    .into_iter()
                    .filter(|(k, _)| !HEADER_FIELDS.contains(&k.as_str()))
                    .collect::<Map<String, Value>>(),
            },
        )
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Routing identities: anything but the delimiter itself (see
/// `identity_equal_to_the_delimiter`).
fn arb_identity() -> impl Strategy<Value = Bytes> {
    arb_bytes(24).prop_filter("not the delimiter", |b| b.as_ref() != DELIMITER)
}

prop_compose! {
    fn arb_message()(
        identities in vec(arb_identity(), 0..3),
        header in arb_header(),
        parent_header in proptest::option::of(arb_header()),
        metadata in arb_json(),
        content in arb_object(),
        buffers in vec(arb_bytes(64), 0..4),
    ) -> Message {
        Message { identities, header, parent_header, metadata, content, buffers }
    }
}

/// One frame of hostile input.
fn arb_frame() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => arb_bytes(48),
        2 => Just(Bytes::from_static(DELIMITER)),
        1 => Just(Bytes::new()),
        1 => Just(Bytes::from_static(b"{}")),
        1 => Just(Bytes::from_static(br#"{"msg_id":"a","msg_type":"execute_request"}"#)),
        1 => "[0-9a-f]{64}".prop_map(Bytes::from),
        1 => arb_json().prop_map(|v| Bytes::from(serde_json::to_vec(&v).unwrap())),
        1 => arb_bytes(4096),
    ]
}

/// A change to a validly signed message.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR one byte of one of the four signed parts (0..4).
    FlipSigned { part: usize, pos: usize, xor: u8 },
    /// Replace the signature frame.
    Signature(BadSignature),
    /// Remove the frame at this index (modulo the frame count).
    Drop(usize),
    /// Insert a frame at this index.
    Insert(usize, Bytes),
    /// Swap two frames.
    Swap(usize, usize),
    /// Keep only the first n frames.
    Truncate(usize),
    /// Remove the delimiter frame.
    DropDelimiter,
    /// Replace an unsigned frame (identity or buffer), or add one.
    Unsigned {
        identity: bool,
        index: usize,
        data: Bytes,
    },
}

#[derive(Debug, Clone)]
enum BadSignature {
    Empty,
    RandomHex(String),
    RandomBytes(Bytes),
    OtherKey,
    Truncated(usize),
    Extended(String),
    FlipHexDigit(usize),
    /// The same signature in upper case: refused (lowercase hex only).
    Uppercase,
}

fn arb_mutation() -> impl Strategy<Value = Mutation> {
    let bad_signature = prop_oneof![
        Just(BadSignature::Empty),
        "[0-9a-f]{64}".prop_map(BadSignature::RandomHex),
        arb_bytes(80).prop_map(BadSignature::RandomBytes),
        Just(BadSignature::OtherKey),
        (0usize..64).prop_map(BadSignature::Truncated),
        "[0-9a-f \n]{1,4}".prop_map(BadSignature::Extended),
        (0usize..64).prop_map(BadSignature::FlipHexDigit),
        Just(BadSignature::Uppercase),
    ];
    prop_oneof![
        3 => (0usize..4, any::<usize>(), 1u8..=255)
            .prop_map(|(part, pos, xor)| Mutation::FlipSigned { part, pos, xor }),
        3 => bad_signature.prop_map(Mutation::Signature),
        2 => any::<usize>().prop_map(Mutation::Drop),
        2 => (any::<usize>(), arb_frame()).prop_map(|(i, f)| Mutation::Insert(i, f)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, j)| Mutation::Swap(i, j)),
        1 => (0usize..12).prop_map(Mutation::Truncate),
        1 => Just(Mutation::DropDelimiter),
        1 => (any::<bool>(), any::<usize>(), arb_bytes(32))
            .prop_map(|(identity, index, data)| Mutation::Unsigned { identity, index, data }),
    ]
}

fn apply(mutation: &Mutation, message: &Message, frames: &mut Vec<Bytes>) {
    let split = message.identities.len();
    let n = frames.len();
    match mutation {
        Mutation::FlipSigned { part, pos, xor } => {
            let frame = &mut frames[split + 2 + part];
            let mut bytes = frame.to_vec();
            if bytes.is_empty() {
                bytes.push(*xor);
            } else {
                let i = pos % bytes.len();
                bytes[i] ^= xor;
            }
            *frame = Bytes::from(bytes);
        }
        Mutation::Signature(bad) => {
            let good = String::from_utf8(frames[split + 1].to_vec()).unwrap();
            let new = match bad {
                BadSignature::Empty => String::new().into_bytes(),
                BadSignature::RandomHex(h) => h.clone().into_bytes(),
                BadSignature::RandomBytes(b) => b.to_vec(),
                BadSignature::OtherKey => {
                    let raw = message.to_raw();
                    Signer::new(b"another key")
                        .sign(&[&raw.header, &raw.parent_header, &raw.metadata, &raw.content])
                        .into_bytes()
                }
                BadSignature::Truncated(k) => good.as_bytes()[..*k].to_vec(),
                BadSignature::Extended(extra) => format!("{good}{extra}").into_bytes(),
                BadSignature::FlipHexDigit(i) => {
                    let mut b = good.into_bytes();
                    b[*i] = if b[*i] == b'0' { b'1' } else { b'0' };
                    b
                }
                BadSignature::Uppercase => good.to_uppercase().into_bytes(),
            };
            frames[split + 1] = Bytes::from(new);
        }
        Mutation::Drop(i) => {
            if n > 0 {
                frames.remove(i % n);
            }
        }
        Mutation::Insert(i, f) => frames.insert(i % (n + 1), f.clone()),
        Mutation::Swap(i, j) => frames.swap(i % n, j % n),
        Mutation::Truncate(k) => frames.truncate(*k),
        Mutation::DropDelimiter => {
            frames.remove(split);
        }
        Mutation::Unsigned {
            identity,
            index,
            data,
        } => {
            let (start, count) = if *identity {
                (0, split)
            } else {
                (split + 6, message.buffers.len())
            };
            if count == 0 {
                frames.insert(if *identity { 0 } else { n }, data.clone());
            } else {
                frames[start + index % count] = data.clone();
            }
        }
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config(2000))]

    /// Hostile multipart input: never a panic, never accepted.
    #[test]
    fn arbitrary_frames_are_refused(frames in vec(arb_frame(), 0..12)) {
        let outcome = decode_everywhere(&frames, KEY);
        prop_assert!(!outcome.verified, "accepted unsigned frames: {frames:?}");
        prop_assert!(outcome.decoded.is_none());
    }

    /// A signed message changed in any way is accepted exactly when what
    /// the signature covers did not change.
    #[test]
    fn mutated_messages_are_refused(message in arb_message(), mutation in arb_mutation()) {
        let sender = Signer::new(KEY);
        let original = message.to_raw().into_frames(&sender);
        let mut frames = original.clone();
        apply(&mutation, &message, &mut frames);
        let expected = signed_view(&frames).is_some()
            && signed_view(&frames) == signed_view(&original);
        let outcome = decode_everywhere(&frames, KEY);
        prop_assert_eq!(outcome.verified, expected, "{:?} → {:?}", mutation, frames);
        if let Some(decoded) = &outcome.decoded {
            // What was accepted carries the signed content unchanged.
            assert_same(decoded, &message, false);
        }
        // One receiver: the mutated copy first, then the original.
        let receiver = Session::new(KEY, "receiver");
        let first = zmq(&frames).map(|m| receiver.decode(m));
        let second = receiver.decode(zmq(&original).unwrap());
        if outcome.verified {
            prop_assert!(matches!(first, Some(Ok(_))));
            prop_assert!(matches!(
                second,
                Err(WireError::Signature(SignatureError::Replayed))
            ));
        } else {
            prop_assert!(!matches!(first, Some(Ok(_))));
            prop_assert!(second.is_ok());
        }
    }

    /// Bytes of any shape with a correct signature: the JSON layer never
    /// panics, and accepts only JSON parts with an object as content.
    #[test]
    fn validly_signed_garbage_never_panics(
        ids in vec(arb_identity(), 0..3),
        parts in proptest::array::uniform4(prop_oneof![
            arb_bytes(64),
            arb_json().prop_map(|v| Bytes::from(serde_json::to_vec(&v).unwrap())),
            arb_header().prop_map(|h| {
                let mut v = serde_json::to_value(h).unwrap();
                // Drop or retype a required field now and then.
                v.as_object_mut().unwrap().remove("msg_type");
                Bytes::from(serde_json::to_vec(&v).unwrap())
            }),
            arb_header().prop_map(|h| Bytes::from(serde_json::to_vec(&h).unwrap())),
            Just(Bytes::from_static(b"{}")),
            Just(Bytes::from_static(b"null")),
            Just(Bytes::from_static(br#"{"msg_id":1,"msg_type":"x"}"#)),
        ]),
        buffers in vec(arb_bytes(16), 0..3),
    ) {
        let frames = signed_frames(&ids, [&parts[0], &parts[1], &parts[2], &parts[3]], &buffers, &Signer::new(KEY));
        let outcome = decode_everywhere(&frames, KEY);
        prop_assert!(outcome.verified);
        let json: Vec<Option<Value>> =
            parts.iter().map(|p| serde_json::from_slice(p).ok()).collect();
        // What the decoder should accept, worked out independently.
        let parent_ok = match &json[1] {
            Some(Value::Null) => true,
            Some(Value::Object(m)) if m.is_empty() => true,
            Some(v) => serde_json::from_value::<Header>(v.clone()).is_ok(),
            None => false,
        };
        let expected = serde_json::from_slice::<Header>(&parts[0]).is_ok()
            && parent_ok
            && json[2].is_some()
            && json[3].as_ref().is_some_and(Value::is_object);
        prop_assert_eq!(outcome.decoded.is_some(), expected, "{:?}", parts);
        if let Some(message) = &outcome.decoded {
            let header = json[0].as_ref().unwrap();
            prop_assert_eq!(header["msg_id"].as_str(), Some(message.header.msg_id.as_str()));
            prop_assert_eq!(header["msg_type"].as_str(), Some(message.msg_type()));
            prop_assert_eq!(&message.content, json[3].as_ref().unwrap());
            prop_assert_eq!(&message.metadata, json[2].as_ref().unwrap());
            prop_assert_eq!(&message.identities, &ids);
            prop_assert_eq!(&message.buffers, &buffers);
        }
    }

    /// encode → decode is the identity, through Session and RawMessage.
    #[test]
    fn valid_messages_round_trip(message in arb_message()) {
        let sender = Session::new(KEY, "sender");
        let receiver = Session::new(KEY, "receiver");
        let back = receiver.decode(sender.encode(&message)).unwrap();
        assert_same(&back, &message, true);
        prop_assert_eq!(back.msg_type(), message.msg_type());
        let raw = message.to_raw();
        // Fresh receivers: the same bytes again would be a replay.
        let again = RawMessage::from_frames(raw.clone().into_frames(sender.signer()), &Signer::new(KEY)).unwrap();
        prop_assert_eq!(again, raw);
        let controller = controller_decode(&message.to_raw().into_frames(sender.signer()), &Signer::new(KEY)).unwrap();
        assert_same(&controller, &message, false);
    }

    /// The same valid message twice to one signer: the second is a replay,
    /// whatever the unsigned frames; in upper case it is no signature.
    #[test]
    fn replays_are_refused(
        message in arb_message(),
        other_ids in vec(arb_identity(), 0..3),
        other_buffers in vec(arb_bytes(16), 0..3),
        uppercase in any::<bool>(),
    ) {
        let sender = Session::new(KEY, "sender");
        let frames = message.to_raw().into_frames(sender.signer());
        let receiver = Session::new(KEY, "receiver");
        // A clone shares the replay guard (the kernel's channels do this).
        let other_channel = receiver.clone();
        prop_assert!(receiver.decode(zmq(&frames).unwrap()).is_ok());

        let mut replay = message.clone();
        replay.identities = other_ids;
        replay.buffers = other_buffers;
        let mut replayed = replay.to_raw().into_frames(sender.signer());
        if uppercase {
            let split = replay.identities.len();
            let upper = replayed[split + 1].to_ascii_uppercase();
            replayed[split + 1] = Bytes::from(upper);
        }
        for (attempt, refusal) in [
            (&frames, SignatureError::Replayed),
            (&replayed, if uppercase { SignatureError::Mismatch } else { SignatureError::Replayed }),
        ] {
            for session in [&receiver, &other_channel] {
                let refused = |r: Result<_, WireError>| {
                    matches!(r, Err(WireError::Signature(e)) if e == refusal)
                };
                prop_assert!(refused(session.decode(zmq(attempt).unwrap()).map(|_| ())));
                prop_assert!(refused(verify_frames(attempt, session.signer()).map(|_| ())));
            }
        }
        // A different signer (another process) has not seen it.
        let elsewhere = Session::new(KEY, "elsewhere").decode(zmq(&replayed).unwrap());
        prop_assert_eq!(elsewhere.is_ok(), !uppercase);
    }
}

// -------------------------------------------------------- shared memory

/// A file outside `/dev/shm` that hostile metadata may try to name.
struct Decoy {
    dir: PathBuf,
    file: PathBuf,
}

impl Decoy {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rparallel-fuzz-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("rparallel-decoy");
        std::fs::write(&file, b"decoy").unwrap();
        Decoy { dir, file }
    }

    fn intact(&self) -> bool {
        std::fs::read(&self.file)
            .map(|b| b == b"decoy")
            .unwrap_or(false)
    }
}

impl Drop for Decoy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn is_ours(path: &str) -> bool {
    // The only names the scheme accepts: directly in /dev/shm, prefixed.
    let p = Path::new(path);
    p.parent() == Some(Path::new("/dev/shm"))
        && p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("rparallel-") && !n.contains(".."))
}

fn arb_shm_path(decoy: String) -> impl Strategy<Value = String> {
    let d = decoy.clone();
    prop_oneof![
        Just(decoy.clone()),
        Just(format!("/dev/shm/..{decoy}")),
        Just(format!("/dev/shm/../..{decoy}")),
        Just(format!("/dev/shm/rparallel-x/../..{decoy}")),
        Just(format!("/dev/shm/rparallel-../..{decoy}")),
        Just(format!("//dev/shm/../..{decoy}")),
        Just("/etc/passwd".to_string()),
        Just("/proc/self/mem".to_string()),
        Just("/dev/shm".to_string()),
        Just("/dev/shm/".to_string()),
        Just("/dev/shm/rparallel-".to_string()),
        Just("rparallel-relative".to_string()),
        Just("/dev/shm/other-name".to_string()),
        Just("/dev/shm/sub/rparallel-x".to_string()),
        Just("/tmp/rparallel-x".to_string()),
        Just("/dev/shm/rparallel-..".to_string()),
        Just("/dev/shm/rparallel-\0x".to_string()),
        // Names the scheme accepts that do not exist.
        "[a-f0-9]{8}".prop_map(|s| format!("/dev/shm/rparallel-fuzz-missing-{s}")),
        "[a-f0-9]{8}".prop_map(|s| format!("/dev/shm/./rparallel-fuzz-missing-{s}")),
        arb_string().prop_map(move |s| format!("{d}{s}")),
        arb_string(),
    ]
}

fn arb_entry(decoy: String) -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (
            prop_oneof![(0u64..6).prop_map(Value::from), arb_json()],
            arb_shm_path(decoy).prop_map(Value::String),
            prop_oneof![Just(json!(5)), any::<u64>().prop_map(Value::from), arb_json()],
        )
            .prop_map(|(index, path, len)| json!({"index": index, "path": path, "len": len})),
        1 => arb_json(),
    ]
}

#[test]
fn shm_metadata_outside_the_scheme_is_refused() {
    let decoy = Decoy::new("entries");
    let path = decoy.file.to_str().unwrap().to_string();
    let mut runner = proptest::test_runner::TestRunner::new(config(1000));
    let metadata = prop_oneof![
        3 => vec(arb_entry(path.clone()), 0..4).prop_map(|e| json!({"rparallel_shm": e})),
        1 => arb_json().prop_map(|v| json!({"rparallel_shm": v})),
        1 => arb_json(),
    ];
    runner
        .run(
            &(metadata, vec(arb_bytes(8), 0..4)),
            |(metadata, buffers)| {
                let mut after = buffers.clone();
                let result = shm::import_buffers(&metadata, &mut after);
                let entries = metadata
                    .get("rparallel_shm")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if result.is_ok() {
                    // Nothing here names an existing file of the scheme, so
                    // only metadata without entries can succeed.
                    prop_assert!(entries.is_empty(), "accepted {metadata}");
                } else {
                    prop_assert_eq!(&after, &buffers, "buffers changed on error");
                }
                for entry in &entries {
                    if let Some(p) = entry.get("path").and_then(Value::as_str) {
                        if !is_ours(p) {
                            prop_assert!(result.is_err());
                        }
                    }
                }
                prop_assert!(decoy.intact(), "the decoy was touched by {metadata}");
                // The Message-level import too.
                let session = Session::new(KEY, "shm");
                let mut message = session.message("apply_request", json!({}), None);
                message.metadata = metadata.clone();
                message.buffers = buffers.clone();
                let imported = shm::import(&mut message);
                prop_assert_eq!(imported.is_ok(), result.is_ok());
                prop_assert!(decoy.intact());
                Ok(())
            },
        )
        .unwrap();
}

#[test]
fn shm_round_trip_through_signed_metadata() {
    if !shm::enabled() {
        return;
    }
    let session = Session::new(KEY, "shm");
    let mut message = session.message("apply_request", json!({}), None);
    let big = Bytes::from(vec![42u8; shm::MIN_SIZE]);
    message.buffers = vec![Bytes::from_static(b"small"), big.clone()];
    shm::export(&mut message).unwrap();
    let path = message.metadata["rparallel_shm"][0]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(is_ours(&path));
    let frames = session.encode(&message).into_vec();
    // Redirecting the entry to another file breaks the signature.
    let mut forged = message.clone();
    forged.metadata["rparallel_shm"][0]["path"] = json!("/etc/passwd");
    let mut forged_frames = forged.to_raw().into_frames(&Signer::new(b"not the key"));
    forged_frames[1] = frames[1].clone();
    assert!(Session::new(KEY, "r")
        .decode(zmq(&forged_frames).unwrap())
        .is_err());
    let mut back = Session::new(KEY, "r")
        .decode(zmq(&frames).unwrap())
        .unwrap();
    shm::import(&mut back).unwrap();
    assert_eq!(back.buffers[1], big);
    assert!(!Path::new(&path).exists(), "the file is removed once read");
    // Importing the same metadata again finds no file: an error, not a panic.
    let mut again = vec![Bytes::new(), Bytes::new()];
    assert!(shm::import_buffers(&message.metadata, &mut again).is_err());
}

/// A name under /dev/shm proves nothing: a symlink `/dev/shm/rparallel-…`
/// planted by another local user must not make the receiver of a validly
/// signed message naming it map the link's target.
#[test]
fn shm_symlinks_are_not_followed() {
    if !shm::enabled() {
        return;
    }
    let decoy = Decoy::new("symlink");
    let link = PathBuf::from(format!(
        "/dev/shm/rparallel-fuzz-link-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&decoy.file, &link).unwrap();
    let metadata = json!({"rparallel_shm": [{"index": 0, "path": link, "len": 5}]});
    let mut buffers = vec![Bytes::new()];
    let result = shm::import_buffers(&metadata, &mut buffers);
    let _ = std::fs::remove_file(&link);
    assert!(
        result.is_err(),
        "followed the symlink and read {:?}",
        String::from_utf8_lossy(&buffers[0])
    );
}

// ------------------------------------------------- deterministic corners

fn valid_parts() -> [Bytes; 4] {
    let session = Session::new(KEY, "t");
    let raw = session
        .message("execute_request", json!({"code": "1"}), None)
        .to_raw();
    [raw.header, raw.parent_header, raw.metadata, raw.content]
}

#[test]
fn oversize_json_parts_are_refused_before_verification() {
    let big = Bytes::from(vec![b' '; MAX_JSON_PART + 1]);
    let [header, parent, metadata, content] = valid_parts();
    for slot in 0..4 {
        let mut parts = [
            header.clone(),
            parent.clone(),
            metadata.clone(),
            content.clone(),
        ];
        parts[slot] = big.clone();
        // Validly signed, and with a garbage signature: refused either way.
        let signed = signed_frames(
            &[],
            [&parts[0], &parts[1], &parts[2], &parts[3]],
            &[],
            &Signer::new(KEY),
        );
        let mut unsigned = signed.clone();
        unsigned[1] = Bytes::from_static(b"00");
        for frames in [signed, unsigned] {
            assert!(matches!(
                verify_frames(&frames, &Signer::new(KEY)),
                Err(WireError::Oversize(n)) if n == MAX_JSON_PART + 1
            ));
            assert!(Session::new(KEY, "r")
                .decode(zmq(&frames).unwrap())
                .is_err());
        }
    }
    // Exactly at the limit, validly signed: verified, then refused as JSON
    // (spaces only), not as oversize.
    let at_limit = Bytes::from(vec![b' '; MAX_JSON_PART]);
    let frames = signed_frames(
        &[],
        [&header, &parent, &metadata, &at_limit],
        &[],
        &Signer::new(KEY),
    );
    assert!(verify_frames(&frames, &Signer::new(KEY)).is_ok());
    assert!(matches!(
        Session::new(KEY, "r").decode(zmq(&frames).unwrap()),
        Err(WireError::Json {
            part: "content",
            ..
        })
    ));
    // Binary buffers have no such limit.
    let frames = signed_frames(
        &[],
        [&header, &parent, &metadata, &content],
        std::slice::from_ref(&big),
        &Signer::new(KEY),
    );
    let message = Session::new(KEY, "r")
        .decode(zmq(&frames).unwrap())
        .unwrap();
    assert_eq!(message.buffers[0].len(), big.len());
}

#[test]
fn deeply_nested_json_is_an_error_not_a_stack_overflow() {
    let [header, parent, metadata, _] = valid_parts();
    for depth in [200, 10_000, 1_000_000] {
        let nested = format!("{{\"a\":{}{}}}", "[".repeat(depth), "]".repeat(depth));
        let frames = signed_frames(
            &[],
            [&header, &parent, &metadata, nested.as_bytes()],
            &[],
            &Signer::new(KEY),
        );
        assert!(matches!(
            Session::new(KEY, "r").decode(zmq(&frames).unwrap()),
            Err(WireError::Json {
                part: "content",
                ..
            })
        ));
    }
}

#[test]
fn signatures_of_every_wrong_kind_are_refused() {
    let [h, p, m, c] = valid_parts();
    let good = Signer::new(KEY).sign(&[&h, &p, &m, &c]);
    let wrong: Vec<(Vec<u8>, Option<SignatureError>)> = vec![
        (b"".to_vec(), Some(SignatureError::Missing)),
        (
            good.as_bytes()[..63].to_vec(),
            Some(SignatureError::Mismatch),
        ),
        (
            format!("{good}0").into_bytes(),
            Some(SignatureError::Mismatch),
        ),
        (
            format!("{good}\n").into_bytes(),
            Some(SignatureError::Mismatch),
        ),
        (
            format!(" {good}").into_bytes(),
            Some(SignatureError::Mismatch),
        ),
        (vec![b'0'; 64], Some(SignatureError::Mismatch)),
        (vec![0xff; 64], Some(SignatureError::Mismatch)),
        (
            Signer::new(b"other").sign(&[&h, &p, &m, &c]).into_bytes(),
            Some(SignatureError::Mismatch),
        ),
        // The signature of the same parts under an empty key is "".
        (
            Signer::new(b"").sign(&[&h, &p, &m, &c]).into_bytes(),
            Some(SignatureError::Missing),
        ),
    ];
    for (signature, error) in wrong {
        let mut frames = signed_frames(&[], [&h, &p, &m, &c], &[], &Signer::new(KEY));
        frames[1] = Bytes::from(signature.clone());
        match verify_frames(&frames, &Signer::new(KEY)) {
            Err(WireError::Signature(e)) => assert_eq!(Some(e), error, "{signature:?}"),
            other => panic!("{signature:?}: {other:?}"),
        }
    }
}

#[test]
fn bad_json_with_a_correct_signature_is_refused_by_part() {
    let [h, p, m, c] = valid_parts();
    let (h, p, m, c) = (&h[..], &p[..], &m[..], &c[..]);
    let cases: [([&[u8]; 4], &str); 8] = [
        ([b"{not json", p, m, c], "header"),
        ([b"{}", p, m, c], "header"), // no msg_id
        ([br#"{"msg_id":1,"msg_type":"x"}"#, p, m, c], "header"),
        ([h, b"[]", m, c], "parent_header"),
        ([h, br#"{"msg_id":"a"}"#, m, c], "parent_header"),
        ([h, p, b"\xff", c], "metadata"),
        ([h, p, m, b"[1]"], "content"),
        ([h, p, m, b"null"], "content"),
    ];
    for (parts, part) in cases {
        let frames = signed_frames(&[], parts, &[], &Signer::new(KEY));
        assert!(verify_frames(&frames, &Signer::new(KEY)).is_ok());
        match Session::new(KEY, "r").decode(zmq(&frames).unwrap()) {
            Err(WireError::Json { part: got, .. }) => assert_eq!(got, part, "{parts:?}"),
            other => panic!("{parts:?}: {other:?}"),
        }
    }
}

/// Routing identities end at the first delimiter: a peer whose identity
/// frame is the delimiter itself shifts the signed frames and is refused
/// (the controller strips the ROUTER identity before looking, so a client
/// naming itself `<IDS|MSG>` still gets through there).
#[test]
fn identity_equal_to_the_delimiter() {
    let session = Session::new(KEY, "s");
    let mut message = session.message("execute_request", json!({}), None);
    message.identities = vec![Bytes::from_static(DELIMITER)];
    let frames = message.to_raw().into_frames(session.signer());
    assert!(verify_frames(&frames, &Signer::new(KEY)).is_err());
    assert!(controller_decode(&frames[1..], &Signer::new(KEY)).is_ok());
}

/// The replay guard remembers the last 65,536 signatures (as jupyter_client
/// does): within that window every repeat is refused.
#[test]
fn replay_window() {
    let session = Session::new(KEY, "s");
    let receiver = Session::new(KEY, "r");
    let first = session.encode(&session.message("heartbeat", json!({}), None));
    assert!(receiver.decode(first.clone()).is_ok());
    for _ in 0..5_000 {
        let m = session.encode(&session.message("heartbeat", json!({}), None));
        assert!(receiver.decode(m).is_ok());
    }
    assert!(matches!(
        receiver.decode(first),
        Err(WireError::Signature(SignatureError::Replayed))
    ));
}

/// Without a key (Jupyter's "no authentication") everything well formed is
/// accepted and nothing is remembered: that mode is only for trusted
/// transports. Documented here so a change is noticed.
#[test]
fn empty_key_accepts_unsigned_messages() {
    let [h, p, m, c] = valid_parts();
    let frames = signed_frames(&[], [&h, &p, &m, &c], &[], &Signer::new(b""));
    assert_eq!(frames[1].len(), 0);
    let open = Session::new(b"", "r");
    assert!(open.decode(zmq(&frames).unwrap()).is_ok());
    assert!(open.decode(zmq(&frames).unwrap()).is_ok());
    assert!(Session::new(KEY, "r")
        .decode(zmq(&frames).unwrap())
        .is_err());
}

/// Floats in JSON parts come back exactly, as with Python's json (the
/// workspace builds serde_json with `float_roundtrip`; without it
/// 7.445041403044128e167 came back as 7.445041403044129e167).
#[test]
fn floats_round_trip() {
    let session = Session::new(KEY, "s");
    let receiver = Session::new(KEY, "r");
    let known = 7.445041403044128e167_f64;
    let message = session.message("apply_request", json!({ "x": known }), None);
    let back = receiver.decode(session.encode(&message)).unwrap();
    assert_eq!(back.content["x"].as_f64(), Some(known));
    let mut runner = proptest::test_runner::TestRunner::new(config(2000));
    runner
        .run(&any::<f64>(), |f| {
            let Some(value) = serde_json::Number::from_f64(f) else {
                return Ok(());
            };
            let message = session.message("apply_request", json!({ "x": value }), None);
            let back = receiver.decode(session.encode(&message)).unwrap();
            prop_assert_eq!(back.content["x"].as_f64(), Some(f));
            Ok(())
        })
        .unwrap();
}
