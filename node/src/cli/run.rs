//! `kpnode run`: the daemon.

use tracing_subscriber::EnvFilter;

use super::{CliResult, DirArg, Failure};
use crate::home::NodeDir;
use crate::node::{Node, NodeOptions};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
#[command(long_about = "Run the node: serve partner nodes over mutual TLS on network.peer_listen, \
deliver queued certificates, confirmations and voids to each enrolled peer, and serve the local \
API on network.api_listen. Stops cleanly on SIGINT or SIGTERM: requests in progress finish, \
everything acknowledged is already on disk.\n\n\
Logs go to standard error; set the level with KPNODE_LOG (e.g. KPNODE_LOG=debug, or \
KPNODE_LOG=kp_node::link=debug).")]
pub struct RunArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Log format on standard error.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_env("KPNODE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

pub fn run(a: RunArgs) -> CliResult {
    init_logging(a.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kpnode")
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(async {
        let dir = NodeDir::new(&a.dir.dir);
        let node = Node::start(NodeOptions::new(dir)).await.map_err(|e| {
            let code = match e {
                crate::node::StartError::Home(crate::home::HomeError::Config(_)) => 2,
                _ => 1,
            };
            Failure { code, lines: e.to_string().lines().map(str::to_owned).collect() }
        })?;
        wait_for_signal().await;
        node.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop the node with SIGKILL");
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
