//! A simulator on loopback and a raw HTTP helper.

use pcsaga_simulator::{SimConfig, Simulator};
use serde_json::Value;

pub const CUSTOMER: &str = "4c4d0c6e-38b9-4c5a-a0f4-3b2f1c1e7a10";
pub const SUBSCRIPTION: &str = "1c461a25-f729-4fa5-aadb-280947dd05e8";

pub struct Harness {
    pub sim: Simulator,
    pub http: reqwest::Client,
    pub app_token: String,
    pub user_token: String,
}

/// A response as plain data.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: Value,
}

impl Harness {
    pub async fn start(config: SimConfig) -> Self {
        let sim = Simulator::start(config).await.expect("simulator starts");
        let http = reqwest::Client::new();
        let mut harness = Self {
            sim,
            http,
            app_token: String::new(),
            user_token: String::new(),
        };
        harness.renew_tokens().await;
        harness
    }

    /// Fetches fresh tokens (after the simulator's clock moved past their expiry).
    pub async fn renew_tokens(&mut self) {
        self.app_token = self.token("client_credentials").await["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
        self.user_token = self.token("refresh_token").await["access_token"]
            .as_str()
            .expect("token")
            .to_owned();
    }

    pub async fn token(&self, grant: &str) -> Value {
        let c = self.sim.config();
        let mut form = vec![
            ("grant_type", grant.to_owned()),
            ("client_id", c.client_id.clone()),
            ("client_secret", c.client_secret.clone()),
            ("resource", c.resource.clone()),
        ];
        if grant == "refresh_token" {
            form.push(("refresh_token", c.refresh_token.clone()));
        }
        let answer = self.form(&self.sim.token_url(), &form).await;
        assert_eq!(answer.status, 200, "{answer:?}");
        answer.json
    }

    pub async fn form(&self, url: &str, form: &[(&str, String)]) -> Answer {
        let response = self
            .http
            .post(url)
            .form(form)
            .send()
            .await
            .expect("token endpoint answers");
        answer(response).await
    }

    /// `GET /_sim/{action}` (the admin API), as JSON.
    pub async fn admin(&self, action: &str) -> Value {
        self.http
            .get(format!("{}/_sim/{action}", self.sim.base_url()))
            .send()
            .await
            .expect("the admin API answers")
            .json()
            .await
            .expect("JSON")
    }

    /// Sends `method path` under `/v1` with the app-only token (or `token`) and a JSON body.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        self.call_as(&self.app_token.clone(), method, path, body)
            .await
    }

    pub async fn call_as(
        &self,
        token: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Answer {
        let url = format!("{}/v1{path}", self.sim.base_url());
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self
            .http
            .request(method, url)
            .bearer_auth(token)
            .header("MS-CorrelationId", "c0ffee00-0000-4000-8000-000000000001");
        if let Some(body) = body {
            request = request.json(&body);
        } else {
            request = request.header("Content-Length", "0");
        }
        answer(request.send().await.expect("simulator answers")).await
    }
}

pub async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let bytes = response.bytes().await.expect("body");
    let json = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer {
        status,
        headers,
        json,
    }
}

/// Registers the test subscription and polls until it is registered.
pub async fn register(h: &Harness) {
    let path = format!("/customers/{CUSTOMER}/subscriptions/{SUBSCRIPTION}");
    assert_eq!(
        h.call("POST", &format!("{path}/registrations"), None)
            .await
            .status,
        202
    );
    for _ in 0..10 {
        if h.call("GET", &format!("{path}/registrationstatus"), None)
            .await
            .json["status"]
            == "Registered"
        {
            return;
        }
    }
    panic!("registration never completed");
}
