//! Coalescing of stream writes, for whoever publishes a cell's output (the
//! kernel's IOPub, an engine's sender). `print` arrives as several writes and
//! a loop of prints as many more: consecutive writes to the same stream of
//! the same request become one message, sent once no more text arrived for
//! a few milliseconds, or when anything else must go out first.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a chunk may wait for more text before it is sent.
pub const COALESCE_WINDOW: Duration = Duration::from_millis(5);
/// A coalesced chunk never grows past this.
pub const MAX_STREAM_CHUNK: usize = 1 << 20;

/// Text ready to be sent as one stream message.
pub struct StreamChunk<P> {
    /// "stdout" or "stderr".
    pub name: String,
    pub text: String,
    /// The request the text belongs to.
    pub parent: P,
}

struct Pending<P> {
    chunk: StreamChunk<P>,
    /// Identifies the request, so two requests' text never merge.
    request: String,
    deadline: Instant,
}

/// Holds at most one chunk that may still grow.
pub struct Coalescer<P> {
    pending: Option<Pending<P>>,
}

impl<P> Default for Coalescer<P> {
    fn default() -> Self {
        Coalescer { pending: None }
    }
}

impl<P> Coalescer<P> {
    /// Adds a write of `request`; returns the chunk to send first when the
    /// write cannot join the pending one.
    pub fn push(
        &mut self,
        name: String,
        text: String,
        request: &str,
        parent: P,
    ) -> Option<StreamChunk<P>> {
        if let Some(p) = &mut self.pending {
            if p.chunk.name == name
                && p.request == request
                && p.chunk.text.len() + text.len() <= MAX_STREAM_CHUNK
            {
                p.chunk.text.push_str(&text);
                return None;
            }
        }
        let done = self.take();
        self.pending = Some(Pending {
            chunk: StreamChunk { name, text, parent },
            request: request.to_string(),
            deadline: Instant::now() + COALESCE_WINDOW,
        });
        done
    }

    /// The pending chunk, to be sent now.
    pub fn take(&mut self) -> Option<StreamChunk<P>> {
        self.pending.take().map(|p| p.chunk)
    }

    /// The next item from `rx`, or the pending chunk once its window passed.
    pub async fn next<T>(&mut self, rx: &mut mpsc::Receiver<T>) -> Next<T, P> {
        let Some(deadline) = self.pending.as_ref().map(|p| p.deadline) else {
            return rx.recv().await.map_or(Next::Closed, Next::Item);
        };
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(item) => item.map_or(Next::Closed, Next::Item),
            Err(_) => self.take().map_or(Next::Closed, Next::Chunk),
        }
    }
}

/// What [`Coalescer::next`] gives.
pub enum Next<T, P> {
    Item(T),
    /// A chunk whose window passed: send it.
    Chunk(StreamChunk<P>),
    /// The channel closed (send what [`Coalescer::take`] still holds).
    Closed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_join_until_stream_or_request_changes() {
        let mut c = Coalescer::default();
        assert!(c.push("stdout".into(), "a".into(), "r1", 1).is_none());
        assert!(c.push("stdout".into(), "\n".into(), "r1", 1).is_none());
        let done = c.push("stderr".into(), "e".into(), "r1", 1).unwrap();
        assert_eq!((done.name.as_str(), done.text.as_str()), ("stdout", "a\n"));
        let done = c.push("stderr".into(), "x".into(), "r2", 2).unwrap();
        assert_eq!((done.text.as_str(), done.parent), ("e", 1));
        assert_eq!(c.take().unwrap().parent, 2);
        assert!(c.take().is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn pending_text_goes_out_after_its_window() {
        let (tx, mut rx) = mpsc::channel::<u8>(4);
        let mut c = Coalescer::default();
        c.push("stdout".into(), "hi".into(), "r", ());
        assert!(matches!(c.next(&mut rx).await, Next::Chunk(chunk) if chunk.text == "hi"));
        tx.send(7).await.unwrap();
        assert!(matches!(c.next(&mut rx).await, Next::Item(7)));
        drop(tx);
        assert!(matches!(c.next(&mut rx).await, Next::Closed));
    }
}
