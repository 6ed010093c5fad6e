//! Parsed messages and the session that creates them.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::sign::Signer;
use crate::wire::{RawMessage, WireError};
use crate::PROTOCOL_VERSION;

/// A message header. Unknown fields (e.g. `subshell_id`) are kept.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Header {
    pub msg_id: String,
    pub msg_type: String,
    #[serde(default)]
    pub session: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub date: String,
    #[serde(default)]
    pub version: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A decoded message. `parent_header` is `None` when it was `{}`.
#[derive(Debug, Clone)]
pub struct Message {
    pub identities: Vec<Bytes>,
    pub header: Header,
    pub parent_header: Option<Header>,
    pub metadata: Value,
    pub content: Value,
    pub buffers: Vec<Bytes>,
}

fn parse<T: serde::de::DeserializeOwned>(part: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    serde_json::from_slice(bytes).map_err(|source| WireError::Json { part, source })
}

impl Message {
    pub fn msg_type(&self) -> &str {
        &self.header.msg_type
    }

    /// Parses the JSON parts of a verified raw message.
    pub fn from_raw(raw: RawMessage) -> Result<Self, WireError> {
        let header: Header = parse("header", &raw.header)?;
        let parent: Value = parse("parent_header", &raw.parent_header)?;
        let parent_header = match parent {
            Value::Object(ref m) if m.is_empty() => None,
            Value::Null => None,
            other => Some(
                serde_json::from_value(other).map_err(|source| WireError::Json {
                    part: "parent_header",
                    source,
                })?,
            ),
        };
        let metadata: Value = parse("metadata", &raw.metadata)?;
        let content: Value = parse("content", &raw.content)?;
        if !content.is_object() {
            return Err(WireError::Json {
                part: "content",
                source: serde::de::Error::custom("content is not a JSON object"),
            });
        }
        Ok(Message {
            identities: raw.identities,
            header,
            parent_header,
            metadata,
            content,
            buffers: raw.buffers,
        })
    }

    /// Encodes the JSON parts (no signature yet).
    pub fn to_raw(&self) -> RawMessage {
        RawMessage {
            identities: self.identities.clone(),
            header: json(&self.header),
            parent_header: match &self.parent_header {
                Some(h) => json(h),
                None => Bytes::from_static(b"{}"),
            },
            metadata: json(&self.metadata),
            content: json(&self.content),
            buffers: self.buffers.clone(),
        }
    }

    /// A string field of the content, or "".
    pub fn content_str(&self, key: &str) -> &str {
        self.content.get(key).and_then(Value::as_str).unwrap_or("")
    }
}

fn json<T: Serialize>(value: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(value).expect("JSON values always serialise"))
}

/// One side of a conversation: a session id, a username and the key.
/// Every message it makes gets a fresh uuid `msg_id` and the current date,
/// so no two signatures repeat.
#[derive(Debug, Clone)]
pub struct Session {
    pub id: String,
    pub username: String,
    signer: Arc<Signer>,
}

impl Session {
    pub fn new(key: &[u8], username: &str) -> Self {
        Session {
            id: uuid::Uuid::new_v4().to_string(),
            username: username.to_string(),
            signer: Arc::new(Signer::new(key)),
        }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// A fresh header for a message of `msg_type`.
    pub fn header(&self, msg_type: &str) -> Header {
        Header {
            msg_id: uuid::Uuid::new_v4().to_string(),
            msg_type: msg_type.to_string(),
            session: self.id.clone(),
            username: self.username.clone(),
            date: now_iso8601(),
            version: PROTOCOL_VERSION.to_string(),
            extra: Map::new(),
        }
    }

    /// A new message; `parent` gives the parent header and, for replies on a
    /// ROUTER socket, the identities to route back to.
    pub fn message(&self, msg_type: &str, content: Value, parent: Option<&Message>) -> Message {
        Message {
            identities: parent.map(|p| p.identities.clone()).unwrap_or_default(),
            header: self.header(msg_type),
            parent_header: parent.map(|p| p.header.clone()),
            metadata: Value::Object(Map::new()),
            content,
            buffers: Vec::new(),
        }
    }

    /// The `<kind>_reply` to `request`, routed back to its sender, with
    /// the reply's status in its metadata.
    pub fn reply(&self, request: &Message, content: Value) -> Message {
        let status = content["status"].clone();
        let mut reply = self.message(&reply_type(request.msg_type()), content, Some(request));
        reply.metadata = serde_json::json!({ "status": status });
        reply
    }

    /// Signs and frames a message for sending.
    pub fn encode(&self, message: &Message) -> zeromq::ZmqMessage {
        message.to_raw().into_zmq(&self.signer)
    }

    /// Verifies and parses received frames.
    pub fn decode(&self, frames: zeromq::ZmqMessage) -> Result<Message, WireError> {
        Message::from_raw(RawMessage::from_zmq(frames, &self.signer)?)
    }
}

/// `execute_request` → `execute_reply`.
pub fn reply_type(request_type: &str) -> String {
    format!(
        "{}_reply",
        request_type
            .strip_suffix("_request")
            .unwrap_or(request_type)
    )
}

/// The current UTC time as ISO 8601 with microseconds, as Jupyter writes it.
pub fn now_iso8601() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_are_unique_and_dated() {
        let s = Session::new(b"k", "u");
        let a = s.header("status");
        let b = s.header("status");
        assert_ne!(a.msg_id, b.msg_id);
        assert!(a.date.ends_with('Z') && a.date.contains('T'));
        assert_eq!(a.version, PROTOCOL_VERSION);
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = Session::new(b"k", "u");
        let req = s.message("execute_request", json!({"code": "1"}), None);
        let back = s.decode(s.encode(&req)).unwrap();
        assert_eq!(back.header, req.header);
        assert!(back.parent_header.is_none());
        assert_eq!(back.content_str("code"), "1");
        let reply = s.message("execute_reply", json!({}), Some(&back));
        let back = s.decode(s.encode(&reply)).unwrap();
        assert_eq!(back.parent_header.unwrap().msg_id, req.header.msg_id);
    }

    #[test]
    fn replies_are_typed_routed_and_carry_their_status() {
        let s = Session::new(b"k", "u");
        let mut req = s.message("kernel_info_request", json!({}), None);
        req.identities = vec![Bytes::from_static(b"peer")];
        let reply = s.reply(&req, json!({"status": "ok"}));
        assert_eq!(reply.msg_type(), "kernel_info_reply");
        assert_eq!(reply.identities, req.identities);
        assert_eq!(reply.metadata["status"], "ok");
        assert_eq!(reply_type("shutdown_request"), "shutdown_reply");
        assert_eq!(reply_type("odd"), "odd_reply");
    }

    #[test]
    fn bad_json_is_an_error() {
        let signer = Signer::new(b"k");
        let raw = RawMessage {
            header: Bytes::from_static(b"{not json"),
            parent_header: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from_static(b"{}"),
            ..Default::default()
        };
        let frames = raw.into_frames(&signer);
        let raw = RawMessage::from_frames(frames, &signer).unwrap();
        assert!(Message::from_raw(raw).is_err());
        let raw = RawMessage {
            header: Bytes::from(
                serde_json::to_vec(&json!({"msg_id": "x", "msg_type": "t"})).unwrap(),
            ),
            parent_header: Bytes::from_static(b"{}"),
            metadata: Bytes::from_static(b"{}"),
            content: Bytes::from_static(b"[1]"),
            ..Default::default()
        };
        assert!(Message::from_raw(raw).is_err());
    }
}
