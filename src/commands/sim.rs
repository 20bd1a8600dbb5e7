//! `pcsaga sim`: the Partner Center simulator on its own.

use std::net::{IpAddr, SocketAddr};

use pcsaga_simulator::{Catalog, SimConfig, Simulator};
use serde_json::json;

use crate::cli::SimArgs;
use crate::config::ConfigError;
use crate::exit::{Exit, Failed};
use crate::output::print;

pub async fn run(args: &SimArgs) -> Result<Exit, Failed> {
    let config = match &args.sim_config {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                Failed::new(
                    Exit::InvalidInput,
                    ConfigError(format!("cannot read {}: {e}", path.display())),
                )
            })?;
            toml::from_str::<SimConfig>(&text).map_err(|e| {
                Failed::new(
                    Exit::InvalidInput,
                    ConfigError(format!("{}: {}", path.display(), e.to_string().trim())),
                )
            })?
        }
        None => SimConfig::default(),
    };
    let ip: IpAddr = args.bind.parse().map_err(|_| {
        Failed::new(
            Exit::InvalidInput,
            ConfigError(format!("--bind {:?} is not an IP address", args.bind)),
        )
    })?;
    if !ip.is_loopback() {
        tracing::warn!(%ip, "the simulator listens beyond loopback; its credentials are public");
    }
    let sim = Simulator::start_with(config, Catalog::builtin(), SocketAddr::new(ip, args.port))
        .await
        .map_err(|e| Failed::new(Exit::InvalidInput, e))?;
    let c = sim.config();
    if args.json {
        print(&format!(
            "{}\n",
            json!({"baseUrl": sim.base_url(), "graphUrl": sim.graph_url(), "tokenUrl": sim.token_url(), "tenantId": c.tenant_id, "clientId": c.client_id,
                   "clientSecret": c.client_secret, "refreshToken": c.refresh_token})
        ));
    } else {
        print(&format!(
            "Partner Center simulator listening on {base}\n\
             \n  base URL       {base}\n  Graph URL      {graph}   (the billing export)\n  token URL      {token}\n  tenant         {tenant}\n  client id      {client}\n  \
             client secret  {secret}   (the simulator's own, not a real secret)\n  refresh token  {refresh}\n  \
             admin          {base}/_sim/ledger  /_sim/requests  /_sim/faults  /_sim/clock/advance?seconds=N  /_sim/billing/close\n\
             \nPoint pcsaga at it:\n  export PCSAGA_BASE_URL={base} PCSAGA_GRAPH_URL={graph} PCSAGA_TOKEN_URL={token} PCSAGA_CLIENT_ID={client} \
             PCSAGA_CLIENT_SECRET={secret} PCSAGA_REFRESH_TOKEN={refresh}\n\nCtrl-C stops it.\n",
            base = sim.base_url(),
            graph = sim.graph_url(),
            token = sim.token_url(),
            tenant = c.tenant_id,
            client = c.client_id,
            secret = c.client_secret,
            refresh = c.refresh_token,
        ));
    }
    wait_for_signal().await;
    sim.shutdown().await;
    Ok(Exit::Ok)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
