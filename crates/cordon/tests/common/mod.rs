//! Test support: run the real `cordon` binary and talk to it over HTTP.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_cordon");

/// A running `cordon serve`, killed on drop.
pub struct Gateway {
    pub child: Child,
    pub url: String,
    pub data_dir: PathBuf,
}

impl Gateway {
    /// Start `cordon serve` with `extra` arguments (e.g. `--config FILE`) on a free port, and wait
    /// (with a deadline) for its `cordon listening on` line.
    pub fn start(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg("127.0.0.1:0")
            .args(extra);
        cmd.env("CORDON_LOG", "warn")
            .env_remove("CORDON_CONFIG")
            .env_remove("CORDON_GATEWAY_REGION");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let stderr = std::fs::File::create(data_dir.with_extension("stderr.log")).expect("stderr log");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn cordon serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("cordon listening on ") {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                let log = std::fs::read_to_string(data_dir.with_extension("stderr.log")).unwrap_or_default();
                panic!("cordon serve did not start within 60 s; stderr:\n{log}");
            }
        };
        Gateway {
            child,
            url,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.data_dir.with_extension("stderr.log")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Run the `cordon` CLI; returns (exit code, stdout).
pub fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("CORDON_LOG", "warn")
        .env_remove("CORDON_CONFIG")
        .output()
        .expect("run cordon");
    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        s.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), s)
}

/// A development token from `cordon token`.
pub fn token(data_dir: &Path, subject: &str, country: &str) -> String {
    let dir = data_dir.to_str().expect("utf-8 path");
    let (code, out) = cli(&[
        "token",
        "--subject",
        subject,
        "--country",
        country,
        "--data-dir",
        dir,
    ]);
    assert_eq!(code, 0, "cordon token failed: {out}");
    out.trim().to_string()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POST a JSON body with a bearer token; returns (status, headers, body JSON or text).
pub async fn post(
    url: &str,
    path: &str,
    token: Option<&str>,
    body: serde_json::Value,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = client().post(format!("{url}{path}")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    (status, headers, json)
}

pub fn header(h: &reqwest::header::HeaderMap, name: &str) -> String {
    h.get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

pub fn chat(model: &str, text: &str) -> serde_json::Value {
    serde_json::json!({ "model": model, "messages": [{ "role": "user", "content": text }] })
}

/// The gateway's `/metrics` text.
pub async fn metrics(url: &str) -> String {
    client()
        .get(format!("{url}/metrics"))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// The value of the series `name{labels}` (written exactly as exposed) in a `/metrics` text.
pub fn counter(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {metrics}"))
}

/// The decision record with decision id `id` in the directory store `dir`, if written.
pub fn decision_record(dir: &Path, id: &str) -> Option<cordon_audit::DecisionRecord> {
    cordon_audit::read_records(dir)
        .unwrap()
        .into_iter()
        .find_map(|(_, r)| match r {
            cordon_audit::Record::Decision(d) if d.decision_id.to_string() == id => Some(d),
            _ => None,
        })
}

/// The completion record of decision `id` in the directory store `dir`, if written.
pub fn completion_record(dir: &Path, id: &str) -> Option<cordon_audit::CompletionRecord> {
    cordon_audit::read_records(dir)
        .unwrap()
        .into_iter()
        .find_map(|(_, r)| match r {
            cordon_audit::Record::Completion(c) if c.decision_id.to_string() == id => Some(c),
            _ => None,
        })
}
