//! `airlock serve --config FILE [--listen ADDR:PORT]`: the control plane (HTTP API, web page,
//! webhook) for approvals and the kill switch. Glue only: load the config and policies, read
//! the webhook secret from the environment, check the address, run `airlock_server::serve`
//! until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use clap::Args;

use crate::Failure;

#[derive(Args, Debug)]
pub(crate) struct ServeArgs {
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen here instead of [serve] listen (default 127.0.0.1:7700); port 0 picks a free one.
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Option<SocketAddr>,
}

pub(crate) fn serve(args: ServeArgs) -> Result<u8, Failure> {
    crate::init_logging("info");
    let loaded = crate::load::load(&args.config)?;
    let config = loaded.config;
    let listen = args.listen.unwrap_or(config.serve.listen);
    airlock_config::check_listen(listen, config.serve.allow_remote)
        .map_err(|m| Failure::usage(anyhow!("{}: {m}", config.path.display())))?;
    let webhook_secret = match &config.serve.webhook {
        None => None,
        Some(w) => {
            let secret = std::env::var(&w.secret_env).ok().filter(|s| !s.is_empty());
            let secret = secret.ok_or_else(|| {
                Failure::usage(anyhow!(
                    "[serve.webhook] is configured but ${} is not set: export the webhook's HMAC \
                     secret in it",
                    w.secret_env
                ))
            })?;
            Some(secret.into_bytes())
        }
    };
    let config = Arc::new(config);
    // One load: the page and the gateway judge with the same policy set.
    let policy = Arc::new(loaded.policy);
    let mount = crate::mcp_mount::mount(config.clone(), policy.clone()).map_err(Failure::usage)?;
    let options = airlock_server::Options {
        config: config.clone(),
        policy,
        listen,
        webhook_secret,
        mount: Some(mount),
    };
    // Two workers: a pipeline step that waits on the audit store blocks its worker
    // (`block_in_place`), and the other keeps serving meanwhile.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(airlock_server::serve(
            options,
            |bound| {
                // One line on stdout that scripts (and the tests) wait for.
                println!(
                    "airlock serve: listening on http://{bound} (page: {}/)",
                    config.serve.base_url(bound)
                );
                let _ = std::io::stdout().flush();
            },
            shutdown_signal(),
        ))
        .map_err(Failure::failed)?;
    Ok(0)
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
    tracing::info!("airlock serve: shutting down");
}
