//! The requests waiting for the Python thread, in arrival order. Kept on the
//! I/O side, so an abort can take requests out before they start.

use std::collections::VecDeque;

use rparallel_pyexec::Parent;

#[derive(Default)]
pub struct Queue {
    waiting: VecDeque<Parent>,
}

impl Queue {
    pub fn push(&mut self, request: Parent) {
        self.waiting.push_back(request);
    }

    pub fn pop(&mut self) -> Option<Parent> {
        self.waiting.pop_front()
    }

    pub fn peek(&self) -> Option<&Parent> {
        self.waiting.front()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Takes out the waiting requests with these msg_ids, or all of them
    /// when `msg_ids` is empty (a shutdown still waiting is kept).
    pub fn abort(&mut self, msg_ids: &[String]) -> Vec<Parent> {
        self.take(|r| {
            r.msg_type() != "shutdown_request"
                && (msg_ids.is_empty() || msg_ids.contains(&r.header.msg_id))
        })
    }

    /// Takes out the waiting execute requests (after a failed cell with
    /// `stop_on_error`, as ipykernel does).
    pub fn abort_executes(&mut self) -> Vec<Parent> {
        self.take(|r| r.msg_type() == "execute_request")
    }

    fn take(&mut self, mut aborted: impl FnMut(&Parent) -> bool) -> Vec<Parent> {
        let (out, keep): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|r| aborted(r));
        self.waiting = keep.into();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rparallel_protocol::Session;
    use serde_json::json;
    use std::sync::Arc;

    fn req(session: &Session, msg_type: &str) -> Parent {
        Arc::new(session.message(msg_type, json!({}), None))
    }

    fn types(q: &mut Queue) -> Vec<String> {
        let mut out = vec![];
        while let Some(r) = q.pop() {
            out.push(r.msg_type().to_string());
        }
        out
    }

    #[test]
    fn abort_by_id_keeps_the_rest_in_order() {
        let s = Session::new(b"", "t");
        let mut q = Queue::default();
        let (a, b, c) = (
            req(&s, "execute_request"),
            req(&s, "apply_request"),
            req(&s, "pull_request"),
        );
        for r in [&a, &b, &c] {
            q.push(r.clone());
        }
        let gone = q.abort(std::slice::from_ref(&b.header.msg_id));
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].header.msg_id, b.header.msg_id);
        assert_eq!(q.len(), 2);
        assert_eq!(types(&mut q), ["execute_request", "pull_request"]);
    }

    #[test]
    fn abort_all_spares_shutdown() {
        let s = Session::new(b"", "t");
        let mut q = Queue::default();
        for t in ["execute_request", "shutdown_request", "apply_request"] {
            q.push(req(&s, t));
        }
        assert_eq!(q.abort(&[]).len(), 2);
        assert_eq!(types(&mut q), ["shutdown_request"]);
    }

    #[test]
    fn stop_on_error_aborts_only_executes() {
        let s = Session::new(b"", "t");
        let mut q = Queue::default();
        for t in ["execute_request", "apply_request", "execute_request"] {
            q.push(req(&s, t));
        }
        assert_eq!(q.abort_executes().len(), 2);
        assert_eq!(types(&mut q), ["apply_request"]);
    }
}
