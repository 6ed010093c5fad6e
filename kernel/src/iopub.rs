//! The kernel's IOPub: everything is published through the execution
//! core's `Publisher` (one task owning the PUB socket, in order, streams
//! coalesced); [`KernelStamp`] says how the kernel addresses it.

use bytes::Bytes;
use rparallel_protocol::{Message, Session};
use rparallel_pyexec::Stamp;
use serde_json::Value;

pub use rparallel_pyexec::Publisher as Iopub;

/// Messages waiting for the IOPub socket at most.
pub const CAPACITY: usize = 1024;

/// IOPub messages go out under the topic `kernel.<session>.<msg_type>`;
/// execute replies carry when the cell started.
pub struct KernelStamp {
    pub session: Session,
}

impl Stamp for KernelStamp {
    fn session(&self) -> &Session {
        &self.session
    }

    fn output(&self, msg_type: &str, content: Value, parent: Option<&Message>) -> Option<Message> {
        let mut message = self.session.message(msg_type, content, parent);
        message.identities = vec![Bytes::from(format!(
            "kernel.{}.{msg_type}",
            self.session.id
        ))];
        Some(message)
    }

    fn reply(&self, request: &Message, content: Value, started: &str) -> Message {
        let mut reply = self.session.reply(request, content);
        reply.metadata["started"] = started.into();
        reply.metadata["dependencies_met"] = true.into();
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn outputs_are_published_under_the_kernel_topic() {
        let stamp = KernelStamp {
            session: Session::new(b"k", "kernel"),
        };
        let request = stamp.session.message("execute_request", json!({}), None);
        let out = stamp
            .output("stream", json!({"name": "stdout"}), Some(&request))
            .unwrap();
        let topic = format!("kernel.{}.stream", stamp.session.id);
        assert_eq!(out.identities, vec![Bytes::from(topic)]);
        assert_eq!(out.parent_header.unwrap().msg_id, request.header.msg_id);
        let reply = stamp.reply(&request, json!({"status": "ok"}), "then");
        assert_eq!(reply.msg_type(), "execute_reply");
        assert_eq!(reply.metadata["started"], "then");
        assert_eq!(reply.metadata["status"], "ok");
    }
}
