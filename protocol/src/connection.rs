//! Connection files: where a peer's sockets are and the key that signs
//! messages to it. Written mode 0600, since the key lets anyone run code.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use jupyter_protocol::{ConnectionInfo, Transport};

/// Why a connection file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("connection file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("cannot read connection file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("connection file {path} is not valid: {cause}")]
    Malformed {
        path: PathBuf,
        cause: serde_json::Error,
    },
    #[error(
        "connection file {path} uses signature scheme {scheme:?}; only hmac-sha256 is supported"
    )]
    Scheme { path: PathBuf, scheme: String },
    #[error(
        "connection file {path} is readable by other users; it holds the cluster's key (chmod 600 it)"
    )]
    Exposed { path: PathBuf },
    #[error("cannot write connection file {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
}

fn read_error(path: &Path, cause: std::io::Error) -> ConnectionError {
    if cause.kind() == std::io::ErrorKind::NotFound {
        ConnectionError::Missing { path: path.into() }
    } else {
        ConnectionError::Read {
            path: path.into(),
            cause,
        }
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, ConnectionError> {
    std::fs::read(path).map_err(|cause| read_error(path, cause))
}

/// The bytes of a cluster connection file, refused when group or others
/// may read it: its key lets anyone run code on the engines. (A kernel's
/// own connection file belongs to the Jupyter frontend that wrote it, and
/// is read with [`read`].)
pub fn read_private(path: &Path) -> Result<Vec<u8>, ConnectionError> {
    let meta = std::fs::metadata(path).map_err(|cause| read_error(path, cause))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ConnectionError::Exposed { path: path.into() });
    }
    read_bytes(path)
}

/// Reads and checks a connection file.
pub fn read(path: &Path) -> Result<ConnectionInfo, ConnectionError> {
    let text = read_bytes(path)?;
    let info: ConnectionInfo =
        serde_json::from_slice(&text).map_err(|cause| ConnectionError::Malformed {
            path: path.into(),
            cause,
        })?;
    if !info.key.is_empty() && info.signature_scheme != "hmac-sha256" {
        return Err(ConnectionError::Scheme {
            path: path.into(),
            scheme: info.signature_scheme,
        });
    }
    Ok(info)
}

/// Writes `value` as JSON, readable by the owner only.
pub fn write_private<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), ConnectionError> {
    let err = |cause| ConnectionError::Write {
        path: path.into(),
        cause,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    // `mode` applies only on creation; tighten an existing file too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(err)?;
    let json = serde_json::to_vec_pretty(value).expect("connection info serialises");
    file.write_all(&json).map_err(err)
}

/// The endpoint of one channel of a kernel, `tcp://ip:port` or
/// `ipc://path-port`.
pub fn endpoint(info: &ConnectionInfo, port: u16) -> String {
    endpoint_of(&info.transport, &info.ip, port)
}

/// `tcp://ip:port`, or `ipc://path-port` (Jupyter's naming for ipc files),
/// for kernel and cluster connection files alike.
pub fn endpoint_of(transport: &Transport, ip: &str, port: u16) -> String {
    match transport {
        Transport::TCP => format!("tcp://{ip}:{port}"),
        Transport::IPC => format!("ipc://{ip}-{port}"),
    }
}

/// A 256-bit random key, hex encoded.
pub fn new_key() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ConnectionInfo {
        ConnectionInfo {
            ip: "127.0.0.1".into(),
            transport: Transport::TCP,
            shell_port: 1,
            iopub_port: 2,
            stdin_port: 3,
            control_port: 4,
            hb_port: 5,
            key: new_key(),
            signature_scheme: "hmac-sha256".into(),
            kernel_name: Some("rparallel".into()),
        }
    }

    #[test]
    fn written_private_and_read_back() {
        let dir = std::env::temp_dir().join(format!("rp-conn-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kernel.json");
        write_private(&path, &sample()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            read(&path).unwrap(),
            sample_with_key(&read(&path).unwrap().key)
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn sample_with_key(key: &str) -> ConnectionInfo {
        ConnectionInfo {
            key: key.into(),
            ..sample()
        }
    }

    #[test]
    fn missing_and_malformed_files_are_clear_errors() {
        let dir = std::env::temp_dir().join(format!("rp-conn-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = read(&dir.join("nope.json")).unwrap_err().to_string();
        assert!(missing.contains("does not exist"), "{missing}");
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"ip\": 1").unwrap();
        let malformed = read(&bad).unwrap_err().to_string();
        assert!(malformed.contains("is not valid"), "{malformed}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn endpoints_for_both_transports() {
        let mut info = sample();
        assert_eq!(endpoint(&info, 5555), "tcp://127.0.0.1:5555");
        info.transport = Transport::IPC;
        info.ip = "/tmp/k".into();
        assert_eq!(endpoint(&info, 3), "ipc:///tmp/k-3");
    }

    #[test]
    fn keys_are_random_and_long() {
        assert_ne!(new_key(), new_key());
        assert_eq!(new_key().len(), 64);
    }
}
