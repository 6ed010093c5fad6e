//! How an engine addresses what it sends: every message carries
//! `metadata.engine_id`; outputs and replies go back to the client that
//! asked (its identity frame, copied from the request) with the request as
//! parent; error replies say where they happened (`engine_info`).

use rparallel_protocol::message::{now_iso8601, reply_type};
use rparallel_protocol::{Message, Session};
use serde_json::{json, Value};

/// The engine's identity on the wire: its session, id and uuid.
#[derive(Clone, Debug)]
pub struct Stamp {
    pub session: Session,
    pub engine_id: u64,
    pub uuid: String,
}

impl rparallel_pyexec::Stamp for Stamp {
    fn session(&self) -> &Session {
        &self.session
    }

    /// An output of `parent`. Output produced outside any request (at
    /// start-up) has no one to go to.
    fn output(&self, msg_type: &str, content: Value, parent: Option<&Message>) -> Option<Message> {
        let parent = parent?;
        let mut message = self.session.message(msg_type, content, Some(parent));
        message.metadata = json!({ "engine_id": self.engine_id });
        Some(message)
    }

    fn reply(&self, request: &Message, mut content: Value, started: &str) -> Message {
        if content["status"] != "ok" && content.get("engine_info").is_none() {
            content["engine_info"] = self.engine_info(request);
        }
        let status = content["status"].clone();
        // A task that cannot run here (`@depend`, `@require`) says so: the
        // scheduler then tries another engine.
        let dependencies_met = content["ename"] != "UnmetDependency";
        let msg_type = reply_type(request.msg_type());
        let mut message = self.session.message(&msg_type, content, Some(request));
        message.metadata = json!({
            "engine_id": self.engine_id,
            "engine_uuid": self.uuid,
            "status": status,
            "started": started,
            "completed": now_iso8601(),
            "dependencies_met": dependencies_met,
        });
        message
    }
}

impl Stamp {
    /// The reply of a request that was aborted before it ran.
    pub fn aborted(&self, request: &Message) -> Message {
        let now = now_iso8601();
        rparallel_pyexec::Stamp::reply(self, request, json!({ "status": "aborted" }), &now)
    }

    /// A reply to a request served at once (interrupt, abort).
    pub fn reply_now(&self, request: &Message, content: Value) -> Message {
        rparallel_pyexec::Stamp::reply(self, request, content, &now_iso8601())
    }

    /// A message to the controller itself (no routing identity).
    pub fn own(&self, msg_type: &str, content: Value) -> Message {
        let mut message = self.session.message(msg_type, content, None);
        message.metadata = json!({ "engine_id": self.engine_id });
        message
    }

    /// `engine_info` of error replies, as ipyparallel gives it.
    fn engine_info(&self, request: &Message) -> Value {
        json!({
            "engine_id": self.engine_id,
            "engine_uuid": self.uuid,
            "method": request.msg_type().strip_suffix("_request").unwrap_or(request.msg_type()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rparallel_pyexec::Stamp as _;

    fn stamp() -> Stamp {
        Stamp {
            session: Session::new(b"k", "engine"),
            engine_id: 3,
            uuid: "u-1".into(),
        }
    }

    fn request(msg_type: &str) -> Message {
        let client = Session::new(b"k", "client");
        let mut m = client.message(msg_type, json!({}), None);
        m.identities = vec![Bytes::from_static(b"client-7")];
        m
    }

    #[test]
    fn outputs_go_back_to_the_client_with_the_engine_id() {
        let req = request("execute_request");
        let out = stamp()
            .output("stream", json!({"name": "stdout", "text": "x"}), Some(&req))
            .unwrap();
        assert_eq!(out.identities, vec![Bytes::from_static(b"client-7")]);
        assert_eq!(out.parent_header.unwrap().msg_id, req.header.msg_id);
        assert_eq!(out.metadata["engine_id"], 3);
        assert!(stamp().output("stream", json!({}), None).is_none());
    }

    #[test]
    fn replies_are_typed_and_timed() {
        let req = request("apply_request");
        let reply = stamp().reply(&req, json!({"status": "ok"}), "2020-01-01T00:00:00Z");
        assert_eq!(reply.msg_type(), "apply_reply");
        assert_eq!(reply.metadata["status"], "ok");
        assert_eq!(reply.metadata["started"], "2020-01-01T00:00:00Z");
        assert!(reply.metadata["completed"].as_str().unwrap().ends_with('Z'));
        assert!(reply.content.get("engine_info").is_none());
        let aborted = stamp().aborted(&request("pull_request"));
        assert_eq!(aborted.msg_type(), "pull_reply");
        assert_eq!(aborted.content["status"], "aborted");
        assert_eq!(aborted.content["engine_info"]["method"], "pull");
        let failed = stamp().reply_now(&req, json!({"status": "error", "ename": "E"}));
        assert_eq!(failed.content["engine_info"]["engine_id"], 3);
    }

    #[test]
    fn own_messages_have_no_route() {
        let m = stamp().own("heartbeat", json!({}));
        assert!(m.identities.is_empty());
        assert!(m.parent_header.is_none());
    }
}
