//! The Jupyter wire protocol, shared by the kernel, the controller and the engines.
//!
//! # Layout
//!
//! - [`sign`]: HMAC-SHA256 signatures and the replay guard.
//! - [`wire`]: frames ↔ [`RawMessage`] (identities, `<IDS|MSG>`, signature,
//!   the four JSON parts, binary buffers). Routing can stop here without
//!   parsing JSON.
//! - [`message`]: the parsed message ([`Message`], [`Header`]) and the
//!   [`Session`] that stamps fresh headers and signs outgoing messages.
//! - [`connection`]: connection files (read, write mode 0600, endpoints).
//! - [`reader`]: a task reading a socket into verified messages.
//! - [`shm`]: large buffers between processes on one host, through
//!   `/dev/shm` instead of the sockets.
//!
//! Everything that can fail on input returns an error value; nothing here
//! panics on bytes that came from a socket.

pub mod connection;
pub mod message;
pub mod reader;
pub mod shm;
pub mod sign;
pub mod wire;

pub use connection::{ConnectionInfo, Transport};
pub use message::{Header, Message, Session};
pub use sign::Signer;
pub use wire::{verify_frames, RawMessage, DELIMITER};

/// The messaging protocol version this implementation speaks.
pub const PROTOCOL_VERSION: &str = "5.3";
