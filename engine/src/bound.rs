//! The engine bound as a kernel (`rparallel.bind_kernel()`): a Jupyter
//! kernel's five channels on 127.0.0.1, served by the engine's own Python
//! thread (requests of both kinds run one at a time, in arrival order), so
//! `jupyter console --existing kernel-<pid>.json` reaches the engine's
//! namespace. The channels are the kernel's own (`rparallel_kernel`);
//! while one of their requests runs, the engine's output goes to the
//! kernel's IOPub ([`Server::with_shell`]).

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rparallel_kernel::{Kernel, KernelState};
use rparallel_protocol::connection::{self, ConnectionInfo, Transport};
use rparallel_pyexec::{PyShell, Sink};

use crate::python::{PythonHandle, Server};

/// How long binding the sockets may take.
const BIND_TIMEOUT: Duration = Duration::from_secs(10);

/// Makes `rparallel.bind_kernel()` bind on this engine's I/O runtime.
pub fn register(runtime: tokio::runtime::Handle, python: PythonHandle) {
    rparallel_pyexec::binding::set_binder(Box::new(move |path| bind(&runtime, &python, path)));
}

/// Writes the connection file `path` (mode 0600, a new key) and serves its
/// channels; returns once they listen.
fn bind(
    runtime: &tokio::runtime::Handle,
    python: &PythonHandle,
    path: &Path,
) -> anyhow::Result<()> {
    let [shell_port, iopub_port, stdin_port, control_port, hb_port] = free_ports()?;
    let info = ConnectionInfo {
        ip: "127.0.0.1".into(),
        transport: Transport::TCP,
        shell_port,
        iopub_port,
        stdin_port,
        control_port,
        hb_port,
        key: connection::new_key(),
        signature_scheme: "hmac-sha256".into(),
        kernel_name: Some("rparallel".into()),
    };
    connection::write_private(path, &info)?;
    let kernel = Kernel::new(info);
    let (done, bound) = std::sync::mpsc::channel();
    let python = python.clone();
    runtime.spawn(async move {
        // A client's shutdown_request ends nothing here: the engine goes
        // on serving its cluster.
        let _ = done.send(kernel.serve(python).await.map(|_serving| ()));
    });
    bound
        .recv_timeout(BIND_TIMEOUT)
        .context("the engine's runtime did not bind the kernel's sockets")?
}

/// Five ports free on 127.0.0.1 now.
fn free_ports() -> anyhow::Result<[u16; 5]> {
    let listeners = (0..5)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; 5];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

impl KernelState for Server {
    fn with_shell<R>(&self, sink: &Arc<Sink>, job: impl FnOnce(&PyShell) -> R) -> R {
        /// Ends the diversion however the job ends.
        struct Diverted<'a>(&'a Sink);
        impl Drop for Diverted<'_> {
            fn drop(&mut self) {
                self.0.divert(None);
            }
        }
        self.sink.divert(Some(sink.clone()));
        let _diverted = Diverted(&self.sink);
        job(&self.shell)
    }
}
