//! The `rparallel` kernelspec. Its argv pins both the program (this binary,
//! or the environment's `python -m rparallel`) and the Python environment,
//! so the kernel is the same whichever environment launches it.

use std::path::PathBuf;

use anyhow::Context;
use rparallel_cluster::process::Program;
use rparallel_pyexec::PythonEnv;
use serde_json::json;

pub const KERNEL_NAME: &str = "rparallel";
pub const DISPLAY_NAME: &str = "Python 3 (rparallel)";

/// The logos JupyterLab's launcher and notebook show (`assets/`).
const LOGOS: [(&str, &[u8]); 3] = [
    ("logo-32x32.png", include_bytes!("../assets/logo-32x32.png")),
    ("logo-64x64.png", include_bytes!("../assets/logo-64x64.png")),
    ("logo-svg.svg", include_bytes!("../assets/logo-svg.svg")),
];

/// Where a kernelspec goes.
pub enum Location {
    /// `$JUPYTER_DATA_DIR` or `~/.local/share/jupyter`.
    User,
    /// `PREFIX/share/jupyter`.
    Prefix(PathBuf),
}

impl Location {
    fn kernels_dir(&self) -> anyhow::Result<PathBuf> {
        Ok(match self {
            Location::User => match std::env::var_os("JUPYTER_DATA_DIR") {
                Some(dir) => PathBuf::from(dir),
                None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                    .join(".local/share/jupyter"),
            }
            .join("kernels"),
            Location::Prefix(prefix) => prefix.join("share/jupyter/kernels"),
        })
    }
}

/// The kernel.json for a kernel run by `program` in `env`: the binary with
/// `--python`, or that environment's `python -m rparallel`.
pub fn spec(program: &Program, env: &PythonEnv) -> serde_json::Value {
    let mut argv: Vec<String> = program
        .running(&env.python)
        .argv("kernel")
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Program::Binary(_) = program {
        argv.extend(["--python".into(), env.python.to_string_lossy().into_owned()]);
    }
    argv.extend(["-f".into(), "{connection_file}".into()]);
    json!({
        "argv": argv,
        "display_name": DISPLAY_NAME,
        "language": "python",
        "interrupt_mode": "message",
        "env": {},
        "metadata": { "debugger": false }
    })
}

/// Writes the kernelspec; returns its directory.
pub fn install(location: &Location, env: &PythonEnv) -> anyhow::Result<PathBuf> {
    if !env.python.exists() {
        anyhow::bail!(
            "no Python interpreter at {} (pass --python PATH)",
            env.python.display()
        );
    }
    let program = Program::current().context("cannot find the rparallel binary")?;
    let dir = location.kernels_dir()?.join(KERNEL_NAME);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(&spec(&program, env))?;
    let file = dir.join("kernel.json");
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    for (name, bytes) in LOGOS {
        let file = dir.join(name);
        std::fs::write(&file, bytes).with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_pins_binary_and_environment() {
        let env = PythonEnv {
            python: "/p/.venv/bin/python".into(),
        };
        let spec = spec(&Program::Binary("/x/rparallel".into()), &env);
        assert_eq!(spec["argv"][0], "/x/rparallel");
        assert_eq!(spec["argv"][3], "/p/.venv/bin/python");
        assert_eq!(spec["argv"][5], "{connection_file}");
        assert_eq!(spec["interrupt_mode"], "message");
        assert_eq!(spec["language"], "python");
    }

    #[test]
    fn a_pip_installed_spec_runs_the_environments_python() {
        let env = PythonEnv {
            python: "/p/.venv/bin/python".into(),
        };
        let spec = spec(&Program::Module("/usr/bin/python3".into()), &env);
        assert_eq!(
            spec["argv"],
            json!([
                "/p/.venv/bin/python",
                "-m",
                "rparallel",
                "kernel",
                "-f",
                "{connection_file}"
            ])
        );
    }
}
