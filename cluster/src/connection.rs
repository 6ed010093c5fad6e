//! [`ConnectionFile`]: how to reach a controller. The controller writes one
//! for clients (`rparallel-client.json`) and one for engines
//! (`rparallel-engine.json`); both hold the cluster's key, so they are
//! written mode 0600 and refused when others may read them.

use std::path::Path;

use anyhow::Context;
use rparallel_protocol::connection::{endpoint_of, read_private, write_private};
use rparallel_protocol::Transport;
use serde::{Deserialize, Serialize};

/// The only signature scheme rparallel speaks.
const SCHEME: &str = "hmac-sha256";

/// The version of the cluster protocol (`docs/cluster-protocol.md`) this
/// build speaks; a cluster speaking another one is refused at once, not
/// left to time out.
pub const CLUSTER_PROTOCOL: u32 = 1;

/// A controller's port (for clients or for engines) and the key that signs
/// every message to it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectionFile {
    pub transport: Transport,
    pub ip: String,
    pub port: u16,
    pub key: String,
    #[serde(default = "default_scheme")]
    pub signature_scheme: String,
    /// The controller's process id: local engines are its children, and a
    /// client on its host watches it.
    #[serde(default)]
    pub controller_pid: Option<u32>,
    #[serde(default)]
    pub cluster_id: Option<String>,
    /// The cluster protocol of the controller that wrote the file (files
    /// without it predate the field and speak version 1).
    #[serde(default = "first_protocol")]
    pub protocol: u32,
    /// The rparallel version that wrote it, for the message when the
    /// protocols differ.
    #[serde(default)]
    pub rparallel: Option<String>,
}

fn default_scheme() -> String {
    SCHEME.into()
}

fn first_protocol() -> u32 {
    1
}

impl ConnectionFile {
    /// `tcp://ip:port`, or `ipc://path-port` (the naming of Jupyter's
    /// kernel connection files).
    pub fn endpoint(&self) -> String {
        endpoint_of(&self.transport, &self.ip, self.port)
    }

    /// Reads and checks a connection file, refusing one that others can
    /// read (its key lets anyone run code on the engines).
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text = read_private(path)?;
        Self::parse(&text, path)
    }

    /// Reads the file from this process's stdin (`--file -`): how a
    /// launcher hands it to engines on another host without writing the
    /// key to their disk or putting it on a command line.
    pub fn read_stdin() -> anyhow::Result<Self> {
        use std::io::Read;
        let mut text = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut text)
            .context("cannot read the connection file from stdin")?;
        Self::parse(&text, Path::new("<stdin>"))
    }

    /// Parses a connection file's text (`path` names it in errors).
    pub fn parse(text: &[u8], path: &Path) -> anyhow::Result<Self> {
        let file: ConnectionFile = serde_json::from_slice(text)
            .with_context(|| format!("connection file {} is not valid", path.display()))?;
        if file.protocol != CLUSTER_PROTOCOL {
            anyhow::bail!(
                "connection file {} is from rparallel {} (cluster protocol {}); this is rparallel {} \
                 (protocol {CLUSTER_PROTOCOL}): start the cluster again with this version",
                path.display(),
                file.rparallel.as_deref().unwrap_or("(unknown version)"),
                file.protocol,
                env!("CARGO_PKG_VERSION"),
            );
        }
        if !file.key.is_empty() && file.signature_scheme != SCHEME {
            anyhow::bail!(
                "connection file {} uses signature scheme {:?}; only {SCHEME} is supported",
                path.display(),
                file.signature_scheme
            );
        }
        Ok(file)
    }

    /// Writes the file, readable by its owner only.
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        Ok(write_private(path, self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_controller_writes() {
        let text = br#"{"transport": "tcp", "ip": "127.0.0.1", "port": 5555,
            "key": "abc", "signature_scheme": "hmac-sha256",
            "controller_pid": 42, "cluster_id": "c1"}"#;
        let file = ConnectionFile::parse(text, Path::new("e.json")).unwrap();
        assert_eq!(file.endpoint(), "tcp://127.0.0.1:5555");
        assert_eq!(file.controller_pid, Some(42));
        assert_eq!(file.cluster_id.as_deref(), Some("c1"));
    }

    #[test]
    fn optional_fields_and_ipc() {
        let text = br#"{"transport": "ipc", "ip": "/tmp/c", "port": 3, "key": ""}"#;
        let file = ConnectionFile::parse(text, Path::new("e.json")).unwrap();
        assert_eq!(file.endpoint(), "ipc:///tmp/c-3");
        assert_eq!(file.controller_pid, None);
        assert_eq!(file.signature_scheme, "hmac-sha256");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let err = ConnectionFile::parse(b"{\"ip\": 1", Path::new("e.json")).unwrap_err();
        assert!(err.to_string().contains("is not valid"), "{err}");
        let text = br#"{"transport": "tcp", "ip": "x", "port": 1, "key": "k",
            "signature_scheme": "hmac-md5"}"#;
        let err = ConnectionFile::parse(text, Path::new("e.json")).unwrap_err();
        assert!(err.to_string().contains("hmac-md5"), "{err}");
        let text = br#"{"transport": "tcp", "ip": "127.0.0.1", "port": 5555, "key": "k",
            "protocol": 99, "rparallel": "9.0.0"}"#;
        let err = ConnectionFile::parse(text, Path::new("c.json")).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("rparallel 9.0.0 (cluster protocol 99)"),
            "{message}"
        );
        assert!(message.contains("start the cluster again"), "{message}");
        let err = ConnectionFile::read(Path::new("/nonexistent/engine.json")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn written_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("rp-cf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("client.json");
        let file = ConnectionFile {
            transport: Transport::TCP,
            ip: "127.0.0.1".into(),
            port: 7,
            key: "k".into(),
            signature_scheme: SCHEME.into(),
            controller_pid: Some(1),
            cluster_id: Some("c".into()),
            protocol: CLUSTER_PROTOCOL,
            rparallel: Some("0.1.0".into()),
        };
        file.write(&path).unwrap();
        assert_eq!(ConnectionFile::read(&path).unwrap(), file);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
