//! How a cluster's engines are started (`--engines local|ssh|mpi|slurm`),
//! in the one form the command line and `rparallel.Cluster` both produce:
//! a [`LaunchSpec`]. It travels to the controller as arguments
//! ([`LaunchSpec::args`]), where the launchers resolve it into processes.
//! [`LaunchProgress`] is what the controller reports back, per launch, in
//! the cluster record: who is waiting for engines reads it to draw
//! progress and to say which hosts never sent theirs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

/// The tool that puts engines on hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LauncherKind {
    /// Child processes of the controller, on its host.
    #[default]
    Local,
    /// One ssh connection per host, starting that host's engines.
    Ssh,
    /// One `mpiexec`; engine id = MPI rank.
    Mpi,
    /// One `sbatch` job whose `srun` starts the engines.
    Slurm,
}

impl LauncherKind {
    pub const NAMES: [&'static str; 4] = ["local", "ssh", "mpi", "slurm"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Fails fast when the tool this launcher runs is not installed.
    pub fn check_tool(self) -> anyhow::Result<()> {
        let (tool, package) = match self {
            LauncherKind::Local => return Ok(()),
            LauncherKind::Ssh => ("ssh", "openssh-client"),
            LauncherKind::Mpi => ("mpiexec", "an MPI, such as openmpi-bin"),
            LauncherKind::Slurm => ("sbatch", "Slurm's client, slurm-client"),
        };
        if find_on_path(tool).is_none() {
            bail!("engines=\"{self}\" runs {tool}, which is not on PATH here (install {package})");
        }
        Ok(())
    }
}

impl fmt::Display for LauncherKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LauncherKind {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        // ipyparallel's class names end in "EngineSetLauncher"; its short
        // names are these.
        let lower = s.trim().to_ascii_lowercase();
        let short = lower.strip_suffix("enginesetlauncher").unwrap_or(&lower);
        match short {
            "local" => Ok(LauncherKind::Local),
            "ssh" => Ok(LauncherKind::Ssh),
            "mpi" | "mpiexec" => Ok(LauncherKind::Mpi),
            "slurm" => Ok(LauncherKind::Slurm),
            _ => bail!(
                "unknown engine launcher {s:?}: use one of {}",
                Self::NAMES.join(", ")
            ),
        }
    }
}

/// One host and, optionally, how many engines it runs (`node1:2`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSlots {
    pub host: String,
    pub engines: Option<usize>,
}

impl HostSlots {
    /// `node1`, `node1:2`, or a hostfile line `node1 slots=2`.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let (host, count) = if let Some((host, rest)) = text.split_once(char::is_whitespace) {
            let slots = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("slots="))
                .with_context(|| format!("bad host line {text:?} (expected `host slots=N`)"))?;
            (host, Some(slots))
        } else if let Some((host, count)) = text.rsplit_once(':') {
            (host, Some(count))
        } else {
            (text, None)
        };
        if host.is_empty() || host.contains(['/', '\'', '"', '`', '$']) {
            bail!("bad host name {host:?}");
        }
        let engines = match count {
            None => None,
            Some(count) => match count.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => bail!("bad engine count in {text:?} (expected host:N with N ≥ 1)"),
            },
        };
        Ok(HostSlots {
            host: host.to_string(),
            engines,
        })
    }

    /// `node1:2,node2:2` (the command line's `--hosts`).
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<Self>> {
        text.split(',')
            .filter(|h| !h.trim().is_empty())
            .map(Self::parse)
            .collect()
    }

    /// A hostfile: one host per line (`node1`, `node1:2` or Open MPI's
    /// `node1 slots=2`); `#` starts a comment.
    pub fn read_hostfile(path: &Path) -> anyhow::Result<Vec<Self>> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read hostfile {}", path.display()))?;
        text.lines()
            .map(|line| line.split('#').next().unwrap_or("").trim())
            .filter(|line| !line.is_empty())
            .map(Self::parse)
            .collect()
    }
}

/// How to start a cluster's engines, before it is resolved into processes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LaunchSpec {
    pub kind: LauncherKind,
    pub hosts: Vec<HostSlots>,
    /// How another host runs rparallel, as shell words (`/opt/venv/bin/
    /// python -m rparallel`); None: the way this host does, which is right
    /// on a shared filesystem.
    pub remote_rparallel: Option<String>,
    /// Extra arguments for `mpiexec` (before the program).
    pub mpi_args: Vec<String>,
    /// Extra arguments for `sbatch` (`--partition=…`, `--time=…`).
    pub slurm_args: Vec<String>,
    /// A batch script to submit instead of rparallel's own (`{n}` and
    /// `{engine_command}` filled in): a site's `#SBATCH` lines, modules…
    pub slurm_template: Option<std::path::PathBuf>,
}

impl LaunchSpec {
    /// Checks what can be checked before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.kind == LauncherKind::Local && !self.hosts.is_empty() {
            bail!("hosts are for engines on other hosts: choose a launcher (engines=\"ssh\", \"mpi\" or \"slurm\")");
        }
        if self.kind == LauncherKind::Ssh && self.hosts.is_empty() {
            bail!("the ssh launcher needs hosts (--hosts node1:2,node2:2, or hosts={{\"node1\": 2}} in Python)");
        }
        if !self.mpi_args.is_empty() && self.kind != LauncherKind::Mpi {
            bail!("mpi_args are for engines=\"mpi\"");
        }
        if !self.slurm_args.is_empty() && self.kind != LauncherKind::Slurm {
            bail!("slurm_args are for engines=\"slurm\"");
        }
        if let Some(template) = &self.slurm_template {
            if self.kind != LauncherKind::Slurm {
                bail!("slurm_template is for engines=\"slurm\"");
            }
            let text = std::fs::read_to_string(template).with_context(|| {
                format!("cannot read the Slurm template {}", template.display())
            })?;
            if !ENGINE_COMMAND.iter().any(|p| text.contains(p)) {
                bail!(
                    "the Slurm template {} must run the engines: put {} where they start (e.g. `srun {}`)",
                    template.display(),
                    ENGINE_COMMAND[0],
                    ENGINE_COMMAND[0]
                );
            }
        }
        Ok(())
    }

    /// The number of engines when the caller gives none: the hosts' counts
    /// if they all have one.
    pub fn engines_from_hosts(&self) -> Option<usize> {
        if self.hosts.is_empty() {
            return None;
        }
        self.hosts.iter().map(|h| h.engines).sum()
    }

    /// `n` engines spread over the hosts: a host with a count gets it, the
    /// others share the rest evenly (earlier hosts get one more).
    pub fn plan(&self, n: usize) -> anyhow::Result<Vec<(String, usize)>> {
        let fixed: usize = self.hosts.iter().filter_map(|h| h.engines).sum();
        let open = self.hosts.iter().filter(|h| h.engines.is_none()).count();
        if fixed > n || (open == 0 && fixed != n) {
            bail!(
                "{n} engines asked for, but the hosts ask for {fixed} ({}): give -n {fixed} or change the hosts",
                self.hosts_text()
            );
        }
        let rest = n - fixed;
        let mut open_index = 0;
        let mut plan: Vec<(String, usize)> = Vec::new();
        for host in &self.hosts {
            let count = match host.engines {
                Some(count) => count,
                None => {
                    let share = rest / open + usize::from(open_index < rest % open);
                    open_index += 1;
                    share
                }
            };
            if count == 0 {
                continue;
            }
            match plan.iter_mut().find(|(h, _)| *h == host.host) {
                Some((_, total)) => *total += count,
                None => plan.push((host.host.clone(), count)),
            }
        }
        Ok(plan)
    }

    /// `n` more engines, spread evenly over the hosts whatever their
    /// counts (engines started after the first ones).
    pub fn spread(&self, n: usize) -> Vec<(String, usize)> {
        let hosts = self.hosts.len().max(1);
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.host.clone(), n / hosts + usize::from(i < n % hosts)))
            .filter(|(_, k)| *k > 0)
            .collect()
    }

    /// `node1:2,node2:2`, as `--hosts` takes it.
    pub fn hosts_text(&self) -> String {
        self.hosts
            .iter()
            .map(|h| match h.engines {
                Some(n) => format!("{}:{n}", h.host),
                None => h.host.clone(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The spec as `rparallel controller` arguments.
    pub fn args(&self) -> Vec<String> {
        let mut args = vec!["--engines".to_string(), self.kind.name().to_string()];
        if !self.hosts.is_empty() {
            args.extend(["--hosts".into(), self.hosts_text()]);
        }
        if let Some(remote) = &self.remote_rparallel {
            args.extend(["--remote-rparallel".into(), remote.clone()]);
        }
        if !self.mpi_args.is_empty() {
            args.extend(["--mpi-args".into(), shell_words::join(&self.mpi_args)]);
        }
        if !self.slurm_args.is_empty() {
            args.extend(["--slurm-args".into(), shell_words::join(&self.slurm_args)]);
        }
        if let Some(template) = &self.slurm_template {
            args.extend(["--slurm-template".into(), template.display().to_string()]);
        }
        args
    }
}

/// Where a controller binds and the address its engines and clients dial:
/// `ip` as given (loopback when not, for local engines); for engines on
/// other hosts, by default the address this host's name resolves to,
/// refusing loopback, which on another host is that host's own.
pub fn controller_addresses(
    spec: &LaunchSpec,
    ip: Option<&str>,
    location: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    // mpiexec without hosts runs its ranks here; ssh and Slurm run them
    // elsewhere.
    let remote = match spec.kind {
        LauncherKind::Local => false,
        LauncherKind::Mpi => !spec.hosts.is_empty(),
        LauncherKind::Ssh | LauncherKind::Slurm => true,
    };
    let ip = match ip.map(str::trim) {
        Some("*") => "0.0.0.0".to_string(),
        Some(ip) if !ip.is_empty() => ip.to_string(),
        _ if !remote => "127.0.0.1".to_string(),
        _ => reachable_address()?,
    };
    let loopback =
        |a: &str| a.parse::<std::net::IpAddr>().is_ok_and(|a| a.is_loopback()) || a == "localhost";
    let location = match location {
        Some(location) => Some(location.to_string()),
        None if ip == "0.0.0.0" => Some(reachable_address()?),
        None => None,
    };
    if remote && loopback(location.as_deref().unwrap_or(&ip)) {
        bail!(
            "engines on other hosts cannot reach a controller at {}: give an address of this host they can reach (--ip ADDR, or controller_ip= in Python)",
            location.as_deref().unwrap_or(&ip)
        );
    }
    Ok((ip, location))
}

/// The first non-loopback IPv4 address this host's name resolves to.
fn reachable_address() -> anyhow::Result<String> {
    use std::net::ToSocketAddrs;
    let name = crate::process::hostname();
    let found = (name.as_str(), 0)
        .to_socket_addrs()
        .map(|addrs| {
            addrs
                .map(|a| a.ip())
                .find(|ip| ip.is_ipv4() && !ip.is_loopback())
        })
        .unwrap_or(None);
    match found {
        Some(ip) => Ok(ip.to_string()),
        None => bail!(
            "this host's name ({name}) resolves to no address other hosts can reach: give one with --ip ADDR (controller_ip= in Python)"
        ),
    }
}

/// The first `tool` on PATH.
pub fn find_on_path(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.is_file())
}

/// A Slurm template's placeholder for the engine command line (the second
/// is ipyparallel's name for it).
pub const ENGINE_COMMAND: [&str; 2] = ["{engine_command}", "{program_and_args}"];

/// Splits `--mpi-args "-x A --bind-to none"` as a shell would.
pub fn split_words(text: &str) -> anyhow::Result<Vec<String>> {
    shell_words::split(text).with_context(|| format!("cannot split {text:?} into arguments"))
}

/// One launch (an ssh connection to a host, an `mpiexec`, a Slurm job) as
/// the controller reports it in the cluster record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LaunchProgress {
    /// `ssh node1`, `mpiexec`, `slurm job 42`.
    pub label: String,
    /// Engines expected per host (by the name the launcher was given).
    pub expected: BTreeMap<String, usize>,
    /// Engines registered from this launch so far.
    pub registered: usize,
    /// Hosts the registered engines reported.
    #[serde(default)]
    pub registered_hosts: BTreeMap<String, usize>,
    /// Why the launch ended, once it has (the process exited, the job ended).
    #[serde(default)]
    pub ended: Option<String>,
    /// The last lines its processes wrote to stderr.
    #[serde(default)]
    pub stderr: Vec<String>,
    /// The Slurm job id, for a Slurm launch.
    #[serde(default)]
    pub job_id: Option<String>,
    /// The Slurm job's state and reason (`PENDING Resources`).
    #[serde(default)]
    pub state: Option<String>,
}

impl LaunchProgress {
    pub fn expected_total(&self) -> usize {
        self.expected.values().sum()
    }

    /// Hosts with fewer registered engines than expected, by name (a host
    /// given as an address or alias is matched by its short name).
    pub fn missing_hosts(&self) -> Vec<String> {
        let short = |h: &str| h.split('.').next().unwrap_or(h).to_string();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (host, n) in &self.registered_hosts {
            *seen.entry(short(host)).or_default() += n;
        }
        if self.expected.len() == 1 {
            // One host per launch (ssh): whatever name the engines report.
            let (host, expected) = self.expected.iter().next().unwrap();
            return if self.registered < *expected {
                vec![host.clone()]
            } else {
                vec![]
            };
        }
        self.expected
            .iter()
            .filter(|(host, expected)| seen.get(&short(host)).copied().unwrap_or(0) < **expected)
            .map(|(host, _)| host.clone())
            .collect()
    }

    /// One paragraph on why this launch's engines did not all arrive.
    pub fn failure(&self) -> String {
        let mut text = format!(
            "{}: {} of {} engines registered",
            self.label,
            self.registered,
            self.expected_total()
        );
        let missing = self.missing_hosts();
        if !missing.is_empty() && self.expected.len() > 1 {
            text.push_str(&format!("; none or too few from {}", missing.join(", ")));
        }
        if let Some(ended) = &self.ended {
            text.push_str(&format!("; {ended}"));
        } else if let Some(state) = &self.state {
            text.push_str(&format!("; the job is {state}"));
        }
        if self.stderr.is_empty() {
            text.push_str(" (nothing on stderr)");
        } else {
            text.push_str(":\n    ");
            text.push_str(&self.stderr.join("\n    "));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_names() {
        for name in LauncherKind::NAMES {
            assert_eq!(name.parse::<LauncherKind>().unwrap().name(), name);
        }
        assert_eq!(
            "MPIEngineSetLauncher".parse::<LauncherKind>().unwrap(),
            LauncherKind::Mpi
        );
        let err = "pbs".parse::<LauncherKind>().unwrap_err().to_string();
        assert!(err.contains("unknown engine launcher \"pbs\""), "{err}");
        assert!(err.contains("local, ssh, mpi, slurm"), "{err}");
    }

    #[test]
    fn hosts_parse_in_every_form() {
        let hosts = HostSlots::parse_list("node1:2, node2,10.0.0.3:1").unwrap();
        assert_eq!(
            hosts,
            vec![
                HostSlots {
                    host: "node1".into(),
                    engines: Some(2)
                },
                HostSlots {
                    host: "node2".into(),
                    engines: None
                },
                HostSlots {
                    host: "10.0.0.3".into(),
                    engines: Some(1)
                },
            ]
        );
        assert_eq!(HostSlots::parse("node4 slots=3").unwrap().engines, Some(3));
        for bad in ["node1:0", "node1:x", ":2", "a b", "x;y$(rm)"] {
            assert!(HostSlots::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hostfiles_take_every_form() {
        let path = std::env::temp_dir().join(format!("rp-hostfile-{}", std::process::id()));
        std::fs::write(&path, "# lab\nnode1 slots=2\n\nnode2:3  # big\nnode3\n").unwrap();
        let hosts = HostSlots::read_hostfile(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let counts: Vec<_> = hosts.iter().map(|h| (h.host.as_str(), h.engines)).collect();
        assert_eq!(
            counts,
            [("node1", Some(2)), ("node2", Some(3)), ("node3", None)]
        );
        let err = HostSlots::read_hostfile(Path::new("/nonexistent/hosts")).unwrap_err();
        assert!(err.to_string().contains("cannot read hostfile"), "{err}");
    }

    #[test]
    fn engines_are_spread_over_hosts() {
        let spec = |hosts: &str| LaunchSpec {
            kind: LauncherKind::Ssh,
            hosts: HostSlots::parse_list(hosts).unwrap(),
            ..Default::default()
        };
        assert_eq!(spec("a:2,b:2").engines_from_hosts(), Some(4));
        assert_eq!(spec("a,b:2").engines_from_hosts(), None);
        assert_eq!(
            spec("a,b,c").plan(5).unwrap(),
            vec![("a".into(), 2), ("b".into(), 2), ("c".into(), 1)]
        );
        assert_eq!(
            spec("a:3,b").plan(5).unwrap(),
            vec![("a".into(), 3), ("b".into(), 2)]
        );
        assert_eq!(spec("a,b").plan(1).unwrap(), vec![("a".into(), 1)]);
        assert_eq!(
            spec("a:2,b:2").spread(3),
            vec![("a".into(), 2), ("b".into(), 1)]
        );
        let err = spec("a:2,b:2").plan(3).unwrap_err().to_string();
        assert!(err.contains("give -n 4"), "{err}");
    }

    #[test]
    fn spec_round_trips_through_arguments() {
        let spec = LaunchSpec {
            kind: LauncherKind::Mpi,
            hosts: HostSlots::parse_list("a:2,b:2").unwrap(),
            remote_rparallel: None,
            mpi_args: vec!["-x".into(), "A B".into()],
            ..Default::default()
        };
        let args = spec.args();
        assert_eq!(args[..4], ["--engines", "mpi", "--hosts", "a:2,b:2"]);
        assert_eq!(split_words(&args[5]).unwrap(), spec.mpi_args);
        assert!(spec.validate().is_ok());
        let ssh = LaunchSpec {
            kind: LauncherKind::Ssh,
            ..Default::default()
        };
        assert!(ssh.validate().is_err());
    }

    #[test]
    fn failures_name_the_missing_hosts() {
        let progress = LaunchProgress {
            label: "mpiexec".into(),
            expected: [("node1".to_string(), 2), ("node2".to_string(), 2)].into(),
            registered: 2,
            registered_hosts: [("node1.lab".to_string(), 2)].into(),
            ended: Some("exited with code 1".into()),
            stderr: vec!["orted: cannot connect".into()],
            ..Default::default()
        };
        assert_eq!(progress.missing_hosts(), vec!["node2".to_string()]);
        let text = progress.failure();
        assert!(text.contains("2 of 4 engines registered"), "{text}");
        assert!(text.contains("node2"), "{text}");
        assert!(text.contains("orted: cannot connect"), "{text}");
    }
}
