//! Running a controller (`rparallel controller`): binds the client and
//! engine ports, writes the profile's connection files and record, starts
//! the local engines and runs the hub until the cluster is stopped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use rparallel_cluster::process::Program;
use rparallel_cluster::{ClusterRecord, ConnectionFile, LaunchSpec, Profile};
use rparallel_protocol::{connection::new_key, Session, Transport};
use tokio::sync::mpsc;
use zeromq::{Endpoint, RouterSocket, Socket, SocketEvent};

use crate::events::HubEvent;
use crate::hub::{Hub, HubConfig};
use crate::launch::{check_python, EngineCommand, Launcher};
use crate::record::{Keep, Recorder};
use rparallel_cluster::TaskDb;

/// Options of `rparallel controller`.
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    pub profile: Option<String>,
    /// The address to bind.
    pub ip: String,
    /// The address engines and clients dial, when not `ip` (a controller
    /// bound to 0.0.0.0, or behind a name).
    pub location: Option<String>,
    /// Engines to start (0: engines are started elsewhere).
    pub engines: usize,
    /// How to start them.
    pub launch: LaunchSpec,
    pub python: PathBuf,
    pub heartbeat_period: Duration,
    pub heartbeat_timeout: Duration,
    /// Replace a local engine that dies (killed, crashed) with a new one.
    pub restart_engines: bool,
    /// The task scheduler's scheme and high-water mark.
    pub scheduler: rparallel_cluster::SchedulerSpec,
}

/// Runs a controller in this process until it is stopped.
pub fn run_controller(options: ControllerOptions) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(controller(options))
}

/// How long a closed engine connection waits before it counts: a process
/// the controller watches (a local engine, one behind ssh) says why it
/// ended (`signal 9`) within this, which is the better reason.
const CONNECTION_GRACE: Duration = Duration::from_millis(150);

/// Tells the hub when an engine's connection closes: a process that ends
/// (killed, crashed, wherever it ran, however it was launched) closes its
/// socket at once, so its work fails then and not a heartbeat timeout
/// later. (The engine's DEALER never reconnects: a closed connection is a
/// lost engine.)
fn watch_engine_connections(engines: &mut RouterSocket, events: mpsc::Sender<HubEvent>) {
    use futures::StreamExt;
    let mut monitor = engines.monitor();
    tokio::spawn(async move {
        while let Some(event) = monitor.next().await {
            if let SocketEvent::Disconnected(peer) = event {
                let events = events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(CONNECTION_GRACE).await;
                    let _ = events.send(HubEvent::ConnectionClosed(peer.into())).await;
                });
            }
        }
    });
}

fn port_of(endpoint: &Endpoint) -> anyhow::Result<u16> {
    match endpoint {
        Endpoint::Tcp(_, port) => Ok(*port),
        other => bail!("unexpected endpoint {other}"),
    }
}

async fn controller(options: ControllerOptions) -> anyhow::Result<()> {
    let profile = Profile::new(options.profile.as_deref())?;
    profile.create()?;
    let me = std::process::id();
    profile.refuse_if_running(Some(me))?;
    let key = new_key();
    let session = Session::new(key.as_bytes(), "controller");
    let mut clients = RouterSocket::new();
    let mut engines = RouterSocket::new();
    let client_port = port_of(&clients.bind(&format!("tcp://{}:0", options.ip)).await?)?;
    let engine_port = port_of(&engines.bind(&format!("tcp://{}:0", options.ip)).await?)?;
    let cluster_id = uuid::Uuid::new_v4().to_string();
    let location = options
        .location
        .clone()
        .unwrap_or_else(|| options.ip.clone());
    let file = |port| ConnectionFile {
        transport: Transport::TCP,
        ip: location.clone(),
        port,
        key: key.clone(),
        signature_scheme: "hmac-sha256".into(),
        controller_pid: Some(me),
        cluster_id: Some(cluster_id.clone()),
        protocol: rparallel_cluster::connection::CLUSTER_PROTOCOL,
        rparallel: Some(env!("CARGO_PKG_VERSION").into()),
    };
    profile.write_connection_files(&file(client_port), &file(engine_port))?;
    let mut record = ClusterRecord {
        cluster_id: cluster_id.clone(),
        profile: profile.name.clone(),
        controller_pid: me,
        engines_requested: options.engines,
        engines_alive: 0,
        started: rparallel_protocol::message::now_iso8601(),
        listening: Some(format!(
            "{} (clients: port {client_port}, engines: port {engine_port})",
            options.ip
        )),
        launches: vec![],
    };
    profile.write_record(&record)?;

    let (events_tx, events_rx) = mpsc::channel(256);
    if options.engines > 0 {
        check_python(&options.python)?;
        options.launch.kind.check_tool()?;
    }
    let launcher = Launcher::new(
        options.launch.clone(),
        EngineCommand {
            program: Program::current()?,
            engine_file: profile.engine_file(),
            python: options.python.clone(),
            work_dir: profile.dir.clone(),
        },
        events_tx.clone(),
    )?;
    let stop = events_tx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        let _ = stop.send(HubEvent::Stop).await;
    });

    let record_profile = profile.clone();
    let on_change = Box::new(
        move |alive: usize, launches: &[rparallel_cluster::LaunchProgress]| {
            record.engines_alive = alive;
            record.launches = launches.to_vec();
            if let Err(e) = record_profile.write_record(&record) {
                tracing::warn!("cannot update the cluster record: {e}");
            }
        },
    );
    watch_engine_connections(&mut engines, events_tx.clone());
    let (client_tx, client_rx) = clients.split();
    let (engine_tx, engine_rx) = engines.split();
    let config = HubConfig {
        heartbeat_period: options.heartbeat_period,
        heartbeat_timeout: options.heartbeat_timeout,
        restart_engines: options.restart_engines,
        scheduler: options.scheduler,
    };
    let keep = match options.scheduler.db {
        TaskDb::None => Keep::Nothing,
        TaskDb::Memory => Keep::Memory,
        TaskDb::Sqlite => Keep::Sqlite {
            path: profile.dir.join("tasks.sqlite"),
            run: cluster_id.clone(),
        },
    };
    let (recorder, recorder_out) =
        Recorder::start(session.clone(), keep).context("cannot open the task record")?;
    let hub = Hub::new(session, config, client_tx, engine_tx, on_change)
        .with_recorder(recorder, recorder_out)
        .with_launcher(launcher, options.engines)
        .await
        .context("cannot start engines")?;
    let exit = hub.run(client_rx, engine_rx, events_rx).await;
    tracing::info!("controller stopping: {exit:?}");
    // Engines were told to shut down; give them a moment before the
    // runtime drops their handles (which kills any still running).
    tokio::time::sleep(Duration::from_millis(300)).await;
    profile.remove_files();
    Ok(())
}
