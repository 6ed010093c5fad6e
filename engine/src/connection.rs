//! The engine connection file the controller writes
//! (`security/rparallel-engine.json`): where its engine port is and the key
//! that signs every message.

use std::path::Path;

use rparallel_protocol::Transport;
use serde::Deserialize;

/// The contents of an engine connection file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EngineConnection {
    pub transport: Transport,
    pub ip: String,
    pub port: u16,
    pub key: String,
    #[serde(default = "default_scheme")]
    pub signature_scheme: String,
    /// The controller's process id: a local engine is its child.
    #[serde(default)]
    pub controller_pid: Option<u32>,
    #[serde(default)]
    pub cluster_id: Option<String>,
}

fn default_scheme() -> String {
    "hmac-sha256".into()
}

/// Reads and checks an engine connection file (refused when others may
/// read it).
pub fn read(path: &Path) -> anyhow::Result<EngineConnection> {
    let text = rparallel_protocol::connection::read_private(path)?;
    parse(&text, path)
}

fn parse(text: &[u8], path: &Path) -> anyhow::Result<EngineConnection> {
    let info: EngineConnection = serde_json::from_slice(text).map_err(|e| {
        anyhow::anyhow!(
            "engine connection file {} is not valid: {e}",
            path.display()
        )
    })?;
    if !info.key.is_empty() && info.signature_scheme != "hmac-sha256" {
        anyhow::bail!(
            "engine connection file {} uses signature scheme {:?}; only hmac-sha256 is supported",
            path.display(),
            info.signature_scheme
        );
    }
    Ok(info)
}

impl EngineConnection {
    /// The controller's engine port, `tcp://ip:port` or `ipc://path-port`
    /// (the same naming as kernel connection files).
    pub fn endpoint(&self) -> String {
        match self.transport {
            Transport::TCP => format!("tcp://{}:{}", self.ip, self.port),
            Transport::IPC => format!("ipc://{}-{}", self.ip, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_controller_file() {
        let text = br#"{"transport": "tcp", "ip": "127.0.0.1", "port": 5555,
            "key": "abc", "signature_scheme": "hmac-sha256",
            "controller_pid": 42, "cluster_id": "c1"}"#;
        let info = parse(text, Path::new("e.json")).unwrap();
        assert_eq!(info.endpoint(), "tcp://127.0.0.1:5555");
        assert_eq!(info.controller_pid, Some(42));
        assert_eq!(info.key, "abc");
    }

    #[test]
    fn optional_fields_and_ipc() {
        let text = br#"{"transport": "ipc", "ip": "/tmp/c", "port": 3, "key": ""}"#;
        let info = parse(text, Path::new("e.json")).unwrap();
        assert_eq!(info.endpoint(), "ipc:///tmp/c-3");
        assert_eq!(info.controller_pid, None);
        assert_eq!(info.signature_scheme, "hmac-sha256");
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let err = parse(b"{\"ip\": 1", Path::new("e.json")).unwrap_err();
        assert!(err.to_string().contains("is not valid"), "{err}");
        let text = br#"{"transport": "tcp", "ip": "x", "port": 1, "key": "k",
            "signature_scheme": "hmac-md5"}"#;
        let err = parse(text, Path::new("e.json")).unwrap_err();
        assert!(err.to_string().contains("hmac-md5"), "{err}");
        let err = read(Path::new("/nonexistent/engine.json")).unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
