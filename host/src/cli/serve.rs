//! `edgecascade serve`: an HTTP tier (OpenAI-compatible and native JSON).

use super::Global;
use super::cascade::CascadeArgs;
use anyhow::Context;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Serve plugins over HTTP: OpenAI-compatible chat completions, native JSON, metrics.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    # A cloud tier with the large plugins:\n  \
    edgecascade serve --listen 127.0.0.1:8080 --plugin target/plugins/news-topic-large\n  \
    # An edge gateway that escalates to it:\n  \
    edgecascade serve --listen 127.0.0.1:8081 --plugin target/plugins/news-topic --cloud http://127.0.0.1:8080/v1\n  \
    # A candidate in shadow, and hot reload for when `edgecascade promote` replaces the live package:\n  \
    edgecascade serve --plugin live/sentiment --shadow target/plugins/sentiment-1.1.0 --watch\n\n\
    Routes: POST /v1/chat/completions (model = plugin name), POST /v1/plugins/{name}/infer,\n\
    GET /v1/models, GET /healthz, GET /metrics. Once listening, the first line on stdout is\n\
    `listening on http://ADDR`. SIGINT or SIGTERM stops accepting and drains in-flight requests.")]
pub struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// A plugin package to serve (repeatable).
    #[arg(long = "plugin", value_name = "DIR", required = true)]
    plugins: Vec<PathBuf>,

    /// A candidate package to run in shadow beside the served plugin of the same name
    /// (repeatable, one per plugin). Answers come from the served version; /metrics
    /// counts edgecascade_shadow_compared_total and edgecascade_shadow_disagreements_total
    /// by plugin and candidate version. A hot reload keeps the candidate, and drops it once
    /// the served version is the candidate's own (it was promoted).
    #[arg(long = "shadow", value_name = "DIR")]
    shadows: Vec<PathBuf>,

    /// Hot reload: watch each package's plugin.toml and swap in new versions as they
    /// appear (write the files first, plugin.toml last). A broken version is refused.
    #[arg(long)]
    watch: bool,

    /// How often --watch looks at the packages.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = humantime::parse_duration)]
    watch_interval: std::time::Duration,

    /// Worker threads for the HTTP server; plugin calls run on a separate blocking pool.
    #[arg(long, value_name = "N", default_value_t = 2)]
    workers: usize,

    #[command(flatten)]
    cascade: CascadeArgs,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = global.runtime()?;
    let metrics = edgecascade::Metrics::default();
    let cloud = args.cascade.client()?;
    let mut routers = Vec::new();
    for dir in &args.plugins {
        let package = runtime.verify(dir)?;
        let plugin = super::load_with_progress(&runtime, package)?;
        routers.push(args.cascade.router(plugin, cloud.clone(), metrics.clone())?);
    }
    let shadows = load_shadows(&runtime, &args.shadows, &routers)?;
    let routers = routers.into_iter().map(|r| shadows.attach(r)).collect();
    let state = edgecascade::serve::AppState::new(routers, metrics.clone());
    if args.watch {
        let cascade = args.cascade.clone();
        let make: edgecascade::serve::MakeRouter = std::sync::Arc::new(move |plugin| {
            let router = cascade.router(plugin, cloud.clone(), metrics.clone()).map_err(|e| format!("{e:#}"))?;
            Ok(shadows.attach(router))
        });
        edgecascade::serve::watch(
            state.clone(),
            runtime.clone(),
            args.plugins.clone(),
            make,
            args.watch_interval,
            |r| match r {
                edgecascade::serve::Reload::Swapped { plugin, from, to } => {
                    tracing::warn!("reloaded {plugin}: {from} -> {to}")
                }
                edgecascade::serve::Reload::Refused { dir, error } => {
                    tracing::error!(
                        "refused the new package in {}: {error}; the old version keeps serving",
                        dir.display()
                    )
                }
            },
        );
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let addr = listener.local_addr()?;
        println!("listening on http://{addr}");
        std::io::stdout().flush()?;
        tracing::info!("serving {:?} on http://{addr}", state.names());
        edgecascade::serve::run(listener, state, shutdown_signal()).await?;
        tracing::info!("stopped");
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Loads the --shadow candidates; each must shadow a served plugin, one candidate per plugin.
fn load_shadows(
    runtime: &edgecascade::Runtime,
    dirs: &[PathBuf],
    routers: &[edgecascade::Router],
) -> anyhow::Result<edgecascade::serve::Shadows> {
    let mut candidates = Vec::new();
    for dir in dirs {
        let plugin = super::load_with_progress(runtime, runtime.verify(dir)?)?;
        let name = plugin.name().to_string();
        anyhow::ensure!(
            routers.iter().any(|r| r.plugin().name() == name),
            "--shadow {}: no --plugin named {name} to run it beside",
            dir.display()
        );
        anyhow::ensure!(
            !candidates.iter().any(|c: &edgecascade::Plugin| c.name() == name),
            "--shadow {}: {name} already has a shadow candidate",
            dir.display()
        );
        candidates.push(plugin);
    }
    Ok(edgecascade::serve::Shadows::new(candidates))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return ctrl_c.await.unwrap_or(()),
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    ctrl_c.await.unwrap_or(());
}
