//! Frames ↔ [`RawMessage`]: the multipart layout of a Jupyter message.
//!
//! ```text
//! [identity ...] <IDS|MSG> signature header parent_header metadata content [buffer ...]
//! ```
//!
//! A `RawMessage` keeps the JSON parts as bytes, so a router can verify and
//! forward a message without parsing or re-encoding it.

use bytes::Bytes;
use zeromq::ZmqMessage;

use crate::sign::{SignatureError, Signer};

/// The frame that separates routing identities from the message.
pub const DELIMITER: &[u8] = b"<IDS|MSG>";

/// Frames larger than this are refused before any JSON is parsed.
pub const MAX_JSON_PART: usize = 64 << 20;

/// Why a multipart message could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("no <IDS|MSG> delimiter in {0} frames")]
    NoDelimiter(usize),
    #[error("message has {0} frames after the delimiter, needs at least 5")]
    TooFewFrames(usize),
    #[error("a JSON part of {0} bytes exceeds the limit")]
    Oversize(usize),
    #[error(transparent)]
    Signature(#[from] SignatureError),
    #[error("bad JSON in the {part}: {source}")]
    Json {
        part: &'static str,
        source: serde_json::Error,
    },
}

/// Checks a received multipart message in place: finds the delimiter and
/// verifies the signature, without copying or parsing anything. Returns the
/// delimiter's index, so a router can forward the frames as they are.
pub fn verify_frames(frames: &[Bytes], signer: &Signer) -> Result<usize, WireError> {
    let Some(split) = frames.iter().position(|f| f.as_ref() == DELIMITER) else {
        return Err(WireError::NoDelimiter(frames.len()));
    };
    let rest = &frames[split + 1..];
    if rest.len() < 5 {
        return Err(WireError::TooFewFrames(rest.len()));
    }
    if let Some(big) = rest[1..5].iter().find(|f| f.len() > MAX_JSON_PART) {
        return Err(WireError::Oversize(big.len()));
    }
    signer.verify(&rest[0], &[&rest[1], &rest[2], &rest[3], &rest[4]])?;
    Ok(split)
}

/// A message as it travels: identities, the four JSON parts undecoded, and
/// binary buffers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawMessage {
    pub identities: Vec<Bytes>,
    pub header: Bytes,
    pub parent_header: Bytes,
    pub metadata: Bytes,
    pub content: Bytes,
    pub buffers: Vec<Bytes>,
}

impl RawMessage {
    /// Splits received frames and checks the signature with `signer`.
    pub fn from_frames(frames: Vec<Bytes>, signer: &Signer) -> Result<Self, WireError> {
        let split = verify_frames(&frames, signer)?;
        Ok(Self::from_verified_frames(frames, split))
    }

    /// Splits frames already checked by [`verify_frames`] (which returned
    /// `split`), without verifying again.
    pub fn from_verified_frames(frames: Vec<Bytes>, split: usize) -> Self {
        let mut frames = frames.into_iter();
        let identities: Vec<Bytes> = frames.by_ref().take(split).collect();
        let mut rest = frames.skip(2); // the delimiter and the signature
        let mut next = || rest.next().unwrap_or_default();
        let (header, parent_header, metadata, content) = (next(), next(), next(), next());
        RawMessage {
            identities,
            header,
            parent_header,
            metadata,
            content,
            buffers: rest.collect(),
        }
    }

    /// The frames to send, signed with `signer`.
    pub fn into_frames(self, signer: &Signer) -> Vec<Bytes> {
        let signature = signer.sign(&[
            &self.header,
            &self.parent_header,
            &self.metadata,
            &self.content,
        ]);
        let mut frames = Vec::with_capacity(self.identities.len() + 6 + self.buffers.len());
        frames.extend(self.identities);
        frames.push(Bytes::from_static(DELIMITER));
        frames.push(Bytes::from(signature));
        frames.push(self.header);
        frames.push(self.parent_header);
        frames.push(self.metadata);
        frames.push(self.content);
        frames.extend(self.buffers);
        frames
    }

    /// As a zeromq multipart message.
    pub fn into_zmq(self, signer: &Signer) -> ZmqMessage {
        ZmqMessage::try_from(self.into_frames(signer)).expect("a message always has frames")
    }

    /// Decodes a received zeromq message.
    pub fn from_zmq(message: ZmqMessage, signer: &Signer) -> Result<Self, WireError> {
        Self::from_frames(message.into_vec(), signer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(parts: &[&[u8]]) -> Vec<Bytes> {
        parts.iter().map(|p| Bytes::copy_from_slice(p)).collect()
    }

    fn sample() -> RawMessage {
        RawMessage {
            identities: vec![Bytes::from_static(b"client-1")],
            header: Bytes::from_static(br#"{"msg_id":"a"}"#),
            parent_header: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from_static(br#"{"code":"1"}"#),
            buffers: vec![Bytes::from_static(b"\x00\x01binary")],
        }
    }

    #[test]
    fn round_trip_keeps_identities_and_buffers() {
        let signer = Signer::new(b"k");
        let back = RawMessage::from_frames(sample().into_frames(&signer), &signer).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn matches_python_layout() {
        // jupyter_client.Session(key=b"k").serialize(...) puts the delimiter
        // first and the hex signature second.
        let frames = sample().into_frames(&Signer::new(b"k"));
        assert_eq!(frames[1].as_ref(), DELIMITER);
        assert_eq!(frames[2].len(), 64);
        assert_eq!(frames.len(), 1 + 6 + 1);
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let signer = Signer::new(b"k");
        assert!(matches!(
            RawMessage::from_frames(vec![], &signer),
            Err(WireError::NoDelimiter(0))
        ));
        assert!(matches!(
            RawMessage::from_frames(frames(&[b"id", b"{}", b"{}"]), &signer),
            Err(WireError::NoDelimiter(3))
        ));
        assert!(matches!(
            RawMessage::from_frames(frames(&[DELIMITER, b"sig", b"{}"]), &signer),
            Err(WireError::TooFewFrames(2))
        ));
        assert!(matches!(
            RawMessage::from_frames(
                frames(&[DELIMITER, b"", b"{}", b"{}", b"{}", b"{}"]),
                &signer
            ),
            Err(WireError::Signature(SignatureError::Missing))
        ));
        let mut forged = sample().into_frames(&Signer::new(b"wrong"));
        assert!(matches!(
            RawMessage::from_frames(forged.clone(), &signer),
            Err(WireError::Signature(SignatureError::Mismatch))
        ));
        forged[2] = Bytes::from_static(b"\xff\xfe not ascii");
        assert!(RawMessage::from_frames(forged, &signer).is_err());
    }

    #[test]
    fn replayed_message_is_rejected() {
        let signer = Signer::new(b"k");
        let sent = sample().into_frames(&signer);
        assert!(RawMessage::from_frames(sent.clone(), &signer).is_ok());
        assert!(matches!(
            RawMessage::from_frames(sent, &signer),
            Err(WireError::Signature(SignatureError::Replayed))
        ));
    }
}
