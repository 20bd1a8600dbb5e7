//! Shared setup: a simulator on `127.0.0.1:0` and a client pointed at it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use pcsaga_partner_center::{Client, ClientConfig, Clock, CorrelationId, Credentials, Secret};
use pcsaga_simulator::{SimConfig, Simulator};

pub const CUSTOMER: &str = "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10";
pub const BRAZIL_CUSTOMER: &str = "d6bf25b7-e0a8-4f2d-a31b-97b55cfc774d";
pub const AZURE_SUBSCRIPTION: &str = "1c461a25-f729-4fa5-aadb-280947dd05e8";

pub async fn sim(config: SimConfig) -> Simulator {
    Simulator::start(config)
        .await
        .expect("simulator starts on loopback")
}

pub fn credentials(sim: &Simulator, app_user: bool) -> Credentials {
    let config = sim.config();
    Credentials {
        token_url: sim.token_url(),
        resource: config.resource.clone(),
        client_id: config.client_id.clone(),
        client_secret: Secret::new(config.client_secret.clone()),
        refresh_token: app_user.then(|| Secret::new(config.refresh_token.clone())),
    }
}

pub fn client_config(sim: &Simulator) -> ClientConfig {
    let mut config = ClientConfig::new(sim.base_url());
    config.timeout = Duration::from_secs(10);
    config
}

/// A client with app-only and app+user credentials.
pub fn client(sim: &Simulator) -> Client {
    Client::new(client_config(sim), credentials(sim, true)).expect("client builds")
}

pub fn cid() -> CorrelationId {
    CorrelationId::new()
}

/// A clock tests move by hand.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(Utc::now())))
    }

    pub fn advance(&self, by: Duration) {
        let mut now = self.0.lock().expect("clock lock");
        *now += chrono::Duration::from_std(by).expect("duration fits");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// Requests the simulator saw for one endpoint.
pub fn requests_to(sim: &Simulator, endpoint: &str) -> Vec<pcsaga_simulator::RequestRecord> {
    sim.requests()
        .into_iter()
        .filter(|r| r.endpoint == endpoint)
        .collect()
}
