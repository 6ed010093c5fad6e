//! The requests a client sends engines, typed: what each carries, and how
//! it goes on the wire ([`Request::into_parts`]).

use bytes::Bytes;
use serde_json::{json, Value};

/// One request to an engine. Frames are pickles from the client's
/// serializer; cloning shares them (no copy).
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Runs `code` as a cell. Not silent: the engine counts it and returns
    /// the last expression's value.
    Execute { code: String, silent: bool },
    /// Calls a function: frames of `(f, args, kwargs)`.
    Apply(Vec<Bytes>),
    /// Updates the namespace: frames of a dict.
    Push(Vec<Bytes>),
    /// The values of these names (evaluated in the namespace).
    Pull(Vec<String>),
    /// Empties the namespace.
    Clear,
    /// Drops queued requests (these msg_ids; all when empty).
    Abort(Vec<String>),
    /// Stops the engine.
    Shutdown,
    /// Raises KeyboardInterrupt in the engine's running code.
    Interrupt,
    /// Delivers a signal to the engine process (SIGINT interrupts the
    /// running code, as a real Ctrl-C would).
    Signal(i32),
}

impl Request {
    pub fn msg_type(&self) -> &'static str {
        match self {
            Request::Execute { .. } => "execute_request",
            Request::Apply(_) => "apply_request",
            Request::Push(_) => "push_request",
            Request::Pull(_) => "pull_request",
            Request::Clear => "clear_request",
            Request::Abort(_) => "abort_request",
            Request::Shutdown => "shutdown_request",
            Request::Interrupt => "interrupt_request",
            Request::Signal(_) => "signal_request",
        }
    }

    /// Sent at once, ahead of the in-flight limit: they stop work rather
    /// than add to it.
    pub fn is_urgent(&self) -> bool {
        matches!(
            self,
            Request::Interrupt | Request::Abort(_) | Request::Signal(_)
        )
    }

    /// Whether the engine's reply carries a value (frames) back.
    pub fn returns_value(&self) -> bool {
        matches!(self, Request::Apply(_) | Request::Pull(_))
    }

    /// The message type, content and buffers on the wire.
    pub fn into_parts(self) -> (&'static str, Value, Vec<Bytes>) {
        let msg_type = self.msg_type();
        let (content, buffers) = match self {
            Request::Execute { code, silent } => (
                json!({
                    "code": code,
                    "silent": silent,
                    "store_history": !silent,
                    "stop_on_error": false,
                }),
                vec![],
            ),
            Request::Apply(frames) | Request::Push(frames) => (json!({}), frames),
            Request::Pull(names) => (json!({ "names": names }), vec![]),
            Request::Abort(msg_ids) => (json!({ "msg_ids": msg_ids }), vec![]),
            Request::Signal(sig) => (json!({ "sig": sig }), vec![]),
            Request::Clear | Request::Shutdown | Request::Interrupt => (json!({}), vec![]),
        };
        (msg_type, content, buffers)
    }
}

/// Where a request goes through the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the controller itself.
    Controller,
    /// To one engine.
    Engine(u32),
    /// To whichever engine the controller's scheduler picks.
    Task,
}

impl Route {
    /// The routing frame in front of the message (none for the controller).
    pub fn frame(self) -> Option<Bytes> {
        match self {
            Route::Controller => None,
            Route::Engine(engine) => Some(Bytes::from(format!("engine:{engine}"))),
            Route::Task => Some(Bytes::from_static(b"task")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execute_never_stops_the_queue() {
        let (t, content, buffers) = Request::Execute {
            code: "a = 1".into(),
            silent: false,
        }
        .into_parts();
        assert_eq!(t, "execute_request");
        assert_eq!(
            content,
            json!({"code": "a = 1", "silent": false, "store_history": true, "stop_on_error": false})
        );
        assert!(buffers.is_empty());
        let (_, silent, _) = Request::Execute {
            code: String::new(),
            silent: true,
        }
        .into_parts();
        assert_eq!(silent["store_history"], false);
    }

    #[test]
    fn frames_travel_as_buffers_and_names_as_content() {
        let frames = vec![Bytes::from_static(b"pickle"), Bytes::from_static(b"array")];
        let (t, content, buffers) = Request::Apply(frames.clone()).into_parts();
        assert_eq!(
            (t, content, buffers),
            ("apply_request", json!({}), frames.clone())
        );
        let (t, _, buffers) = Request::Push(frames.clone()).into_parts();
        assert_eq!((t, buffers), ("push_request", frames));
        let (t, content, _) = Request::Pull(vec!["a".into(), "b[0]".into()]).into_parts();
        assert_eq!(
            (t, content),
            ("pull_request", json!({"names": ["a", "b[0]"]}))
        );
        let (t, content, _) = Request::Abort(vec!["m1".into()]).into_parts();
        assert_eq!((t, content), ("abort_request", json!({"msg_ids": ["m1"]})));
    }

    #[test]
    fn interrupts_and_aborts_are_urgent() {
        assert!(Request::Interrupt.is_urgent() && Request::Abort(vec![]).is_urgent());
        assert!(!Request::Clear.is_urgent() && !Request::Shutdown.is_urgent());
        assert!(Request::Apply(vec![]).returns_value() && Request::Pull(vec![]).returns_value());
        assert!(!Request::Push(vec![]).returns_value());
        assert_eq!(Request::Shutdown.msg_type(), "shutdown_request");
        assert_eq!(Request::Clear.into_parts().0, "clear_request");
    }
}
