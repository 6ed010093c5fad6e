//! Profile directories: `$RPARALLEL_DIR` (default `~/.rparallel`) /
//! `profile_<name>/`, holding `security/` (connection files, mode 0600) and
//! `pid/cluster.json` (what `cluster list` shows).

use std::path::{Path, PathBuf};

use anyhow::Context;
use rparallel_protocol::connection::write_private;
use serde::{Deserialize, Serialize};

use crate::connection::ConnectionFile;
use crate::process::process_alive;

pub const CLIENT_FILE: &str = "rparallel-client.json";
pub const ENGINE_FILE: &str = "rparallel-engine.json";
const CLUSTER_FILE: &str = "cluster.json";

/// The record of a running cluster.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterRecord {
    pub cluster_id: String,
    pub profile: String,
    pub controller_pid: u32,
    /// Engines the controller was asked to start.
    pub engines_requested: usize,
    /// Engines registered and alive now.
    pub engines_alive: usize,
    pub started: String,
    /// Where the controller listens: `ip` (clients' port, engines' port).
    #[serde(default)]
    pub listening: Option<String>,
    /// How each launch of engines is going (empty for local engines).
    #[serde(default)]
    pub launches: Vec<crate::launch::LaunchProgress>,
}

/// How private profile names start: `cluster-<owner pid>-<random>`.
const PRIVATE_PREFIX: &str = "cluster-";

/// One profile directory.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub dir: PathBuf,
}

impl Profile {
    /// The profile `name` (default "default") under `$RPARALLEL_DIR`
    /// or `~/.rparallel`.
    pub fn new(name: Option<&str>) -> anyhow::Result<Self> {
        let name = name.unwrap_or("default").to_string();
        let base = match std::env::var_os("RPARALLEL_DIR").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".rparallel"),
        };
        Ok(Profile {
            dir: base.join(format!("profile_{name}")),
            name,
        })
    }

    pub fn security_dir(&self) -> PathBuf {
        self.dir.join("security")
    }

    pub fn client_file(&self) -> PathBuf {
        self.security_dir().join(CLIENT_FILE)
    }

    pub fn engine_file(&self) -> PathBuf {
        self.security_dir().join(ENGINE_FILE)
    }

    pub fn cluster_file(&self) -> PathBuf {
        self.dir.join("pid").join(CLUSTER_FILE)
    }

    /// Creates the directories, `security/` readable by the owner only.
    pub fn create(&self) -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        for dir in [self.security_dir(), self.dir.join("pid")] {
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::set_permissions(self.security_dir(), std::fs::Permissions::from_mode(0o700))?;
        Ok(())
    }

    pub fn write_connection_files(
        &self,
        client: &ConnectionFile,
        engine: &ConnectionFile,
    ) -> anyhow::Result<()> {
        client.write(&self.client_file())?;
        engine.write(&self.engine_file())
    }

    pub fn write_record(&self, record: &ClusterRecord) -> anyhow::Result<()> {
        // Written whole to a temporary name, then renamed: readers never see
        // half a file.
        let path = self.cluster_file();
        let tmp = path.with_extension("json.tmp");
        write_private(&tmp, record)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    pub fn read_record(&self) -> Option<ClusterRecord> {
        let text = std::fs::read(self.cluster_file()).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Fails if another live controller (not `me`) owns this profile.
    pub fn refuse_if_running(&self, me: Option<u32>) -> anyhow::Result<()> {
        if let Some(record) = self.read_record() {
            if Some(record.controller_pid) != me && process_alive(record.controller_pid) {
                anyhow::bail!(
                    "a cluster is already running in profile {} (controller pid {}); stop it with `rparallel cluster stop --profile {}`",
                    self.name,
                    record.controller_pid,
                    self.name
                );
            }
        }
        Ok(())
    }

    /// Removes the files of a cluster that has stopped.
    pub fn remove_files(&self) {
        for path in [self.client_file(), self.engine_file(), self.cluster_file()] {
            let _ = std::fs::remove_file(path);
        }
    }

    /// A private profile name for a cluster started by process `owner`
    /// (removed when the cluster stops; see [`Profile::remove_stale_private`]).
    pub fn private_name(owner: u32) -> String {
        format!(
            "{PRIVATE_PREFIX}{owner}-{}",
            &rparallel_protocol::connection::new_key()[..8]
        )
    }

    /// Removes the private profiles of processes that are gone: a kernel
    /// killed with SIGKILL cannot remove its own.
    pub fn remove_stale_private() {
        let Ok(me) = Profile::new(None) else { return };
        let Some(base) = me.dir.parent() else { return };
        let Ok(entries) = std::fs::read_dir(base) else {
            return;
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(rest) = file_name
                .to_str()
                .and_then(|n| n.strip_prefix("profile_"))
                .and_then(|n| n.strip_prefix(PRIVATE_PREFIX))
            else {
                continue;
            };
            let Some(owner) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
                continue;
            };
            let profile = Profile {
                name: format!("{PRIVATE_PREFIX}{rest}"),
                dir: entry.path(),
            };
            let controller_alive = profile
                .read_record()
                .is_some_and(|r| process_alive(r.controller_pid));
            if !process_alive(owner) && !controller_alive {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Every profile under the base directory that has a cluster record.
    pub fn all_with_clusters() -> anyhow::Result<Vec<(Profile, ClusterRecord)>> {
        let base = Profile::new(None)?
            .dir
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir(&base) else {
            return Ok(found);
        };
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(name) = file_name.to_str().and_then(|n| n.strip_prefix("profile_")) else {
                continue;
            };
            let profile = Profile::new(Some(name))?;
            if let Some(record) = profile.read_record() {
                found.push((profile, record));
            }
        }
        found.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(found)
    }
}
