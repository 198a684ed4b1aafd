//! A throwaway server for `scripts/bench-agent`: serves on 127.0.0.1 (free port) from a
//! temporary data dir, creates an enrollment token, prints `URL TOKEN` on stdout, and runs
//! until stdin closes.

use std::io::Read;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut cfg = edgecd_server::Config::new(dir.path().join("data"));
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.checkin_interval_secs = 1;
    let srv = edgecd_server::EmbeddedServer::start(cfg)?;
    let url = format!("http://{}", srv.addr);
    let http: ureq::Agent = ureq::Agent::config_builder().build().into();
    let body = http
        .post(&format!("{url}/api/v1/admin/enrollment-tokens"))
        .header("authorization", &format!("Bearer {}", srv.admin_token))
        .header("content-type", "application/json")
        .send("{}")?
        .body_mut()
        .read_to_string()?;
    let token: edgecd_api::protocol::CreateTokenResponse = serde_json::from_str(&body)?;
    println!("{url} {}", token.token);
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    Ok(())
}
