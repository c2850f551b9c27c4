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
    edgecascade serve --plugin live/sentiment --shadow target/plugins/sentiment-1.1.0 --watch\n  \
    # A device in a fleet: records shipped to NATS JetStream, new versions taken from its channel:\n  \
    edgecascade serve --plugin live/sentiment --cloud http://gateway:8080/v1 --nats nats://10.0.0.5:4222 \\\n    \
    --device-id shop-17 --trust release.pub\n\n\
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

    #[command(flatten)]
    fleet: super::fleet::DeviceArgs,
}

pub fn run(global: &Global, args: &Args) -> anyhow::Result<ExitCode> {
    let runtime = global.runtime()?;
    let metrics = edgecascade::Metrics::default();
    let cloud = args.cascade.client()?;
    // A device in a fleet: every router logs into the spool that the shipper drains.
    let device = match &args.fleet.nats {
        Some(_) => {
            let id = args.fleet.device_id()?;
            let dir = args.fleet.fleet_dir.join("spool");
            let spool = edgecascade::spool::Spool::open(&dir, args.fleet.spool_cap())
                .with_context(|| format!("opening the spool in {}", dir.display()))?;
            Some((id, std::sync::Arc::new(spool)))
        }
        None => None,
    };
    let spool = device.as_ref().map(|(_, spool)| spool.clone());
    let build = {
        let (cascade, cloud, metrics) = (args.cascade.clone(), cloud.clone(), metrics.clone());
        move |plugin: edgecascade::Plugin| -> anyhow::Result<edgecascade::Router> {
            let router = cascade.router(plugin, cloud.clone(), metrics.clone())?;
            Ok(match &spool {
                Some(spool) => router.with_log(edgecascade::router::EscalationLog::spooled(spool.clone())),
                None => router,
            })
        }
    };
    let mut routers = Vec::new();
    let mut dirs = Vec::new();
    for dir in &args.plugins {
        let package = runtime.verify(dir)?;
        let plugin = super::load_with_progress(&runtime, package)?;
        dirs.push((plugin.name().to_string(), dir.clone()));
        routers.push(build(plugin)?);
    }
    let shadows = load_shadows(&runtime, &args.shadows, &routers)?;
    let routers = routers.into_iter().map(|r| shadows.attach(r)).collect();
    let state = edgecascade::serve::AppState::new(routers, metrics.clone());
    let make: edgecascade::serve::MakeRouter = std::sync::Arc::new(move |plugin| {
        let router = build(plugin).map_err(|e| -> edgecascade::serve::BoxError { format!("{e:#}").into() })?;
        Ok(shadows.attach(router))
    });
    if args.watch {
        edgecascade::serve::watch(
            state.clone(),
            runtime.clone(),
            args.plugins.clone(),
            make.clone(),
            args.watch_interval,
            report_reload,
        );
    }
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers.max(1))
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    tokio.block_on(async {
        if let (Some(url), Some((id, spool))) = (&args.fleet.nats, device) {
            join_fleet(url, id, spool, &args.fleet, &state, &runtime, make, &metrics, &dirs).await?;
        }
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

fn report_reload(reload: edgecascade::serve::Reload) {
    match reload {
        edgecascade::serve::Reload::Swapped { plugin, from, to } => tracing::warn!("reloaded {plugin}: {from} -> {to}"),
        edgecascade::serve::Reload::Refused { dir, error } => {
            tracing::error!("refused the new package for {}: {error}; the old version keeps serving", dir.display())
        }
    }
}

/// Starts the shipper and, unless --no-follow, a channel follower per served plugin.
#[allow(clippy::too_many_arguments)]
async fn join_fleet(
    url: &str,
    id: String,
    spool: std::sync::Arc<edgecascade::spool::Spool>,
    args: &super::fleet::DeviceArgs,
    state: &edgecascade::serve::AppState,
    runtime: &edgecascade::Runtime,
    make: edgecascade::serve::MakeRouter,
    metrics: &edgecascade::Metrics,
    dirs: &[(String, PathBuf)],
) -> anyhow::Result<()> {
    use edgecascade::fleet::{Fleet, channel, ship};
    let fleet = Fleet::connect(url, &format!("edgecascade-device-{id}"), metrics.clone()).await?;
    tracing::info!("device {id} joins the fleet at {url}; spool {}", spool.dir().display());
    tokio::spawn(ship::ship(fleet.clone(), spool, id, metrics.clone()));
    if args.no_follow {
        return Ok(());
    }
    let device =
        channel::Device { state: state.clone(), runtime: runtime.clone(), make_router: make, metrics: metrics.clone() };
    let staging = args.fleet_dir.join("staging");
    for (name, dir) in dirs {
        let follow =
            channel::follow(fleet.clone(), device.clone(), name.clone(), dir.clone(), staging.clone(), report_reload);
        tokio::spawn(follow);
    }
    Ok(())
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
