//! Interop: the official `openai` Python package against the quickstart gateway (chat, stream,
//! embeddings, models, a refusal raising `PermissionDeniedError` with the reason code). The venv is
//! made by `scripts/test.sh`; `CORDON_PYTHON` points at its interpreter.

mod common;

use common::*;

#[test]
fn openai_python_sdk_against_the_gateway() {
    let python = std::env::var("CORDON_PYTHON")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python").to_string());
    assert!(
        std::path::Path::new(&python).exists(),
        "no Python with the openai package at {python}: run `bash scripts/test.sh` (it makes the venv) or set CORDON_PYTHON"
    );
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let gw = Gateway::start(&data, &[], &[]);
    let eu = token(&data, "sdk-eu", "DE");
    let us = token(&data, "sdk-us", "US");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/openai_client.py"
    );
    let out = std::process::Command::new(&python)
        .args([script, &gw.url, &eu, &us])
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "interop failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ngateway:\n{}",
        gw.stderr()
    );
    for check in [
        "chat ok",
        "stream ok",
        "embeddings ok",
        "models ok",
        "refusal ok",
        "auth ok",
    ] {
        assert!(stdout.contains(check), "{check} missing:\n{stdout}");
    }
}
