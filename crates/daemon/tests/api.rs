//! The daemon's HTTP API, driven over real HTTP against daemons started
//! in-process on 127.0.0.1 (API and peer) with temporary data directories.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use shoal_daemon::{Daemon, DaemonConfig, DaemonError};
use shoal_node::host::HostConfig;

const TEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs a test body with a hard time limit.
async fn bounded<F: Future<Output = ()>>(f: F) {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("the test did not finish within its time limit");
}

fn config(dir: &Path) -> DaemonConfig {
    DaemonConfig::new(dir, HostConfig::default())
}

async fn start(dir: &Path) -> Daemon {
    Daemon::start(config(dir)).await.expect("daemon starts")
}

/// A daemon whose uploads are limited to `rate` bytes per second.
async fn start_slow(dir: &Path, rate: u64) -> Daemon {
    let mut cfg = config(dir);
    cfg.settings.upload_limit = Some(rate);
    Daemon::start(cfg).await.expect("daemon starts")
}

struct Api {
    client: Client,
    base: String,
    token: String,
}

impl Api {
    fn new(d: &Daemon) -> Self {
        Self {
            client: Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: format!("http://{}", d.api_addr()),
            token: d.token().to_owned(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut r = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.expect("request sent");
        let code = resp.status();
        let text = resp.text().await.unwrap_or_default();
        (code, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }

    async fn raw(&self, path: &str) -> (StatusCode, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    /// Polls a transfer until `pred` holds.
    async fn wait_transfer(&self, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (code, t) = self.get(&format!("/api/v1/transfers/{id}")).await;
            assert_eq!(code, StatusCode::OK, "{t}");
            if pred(&t) {
                return t;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "transfer never became {what}: {t}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// A file of `size` pseudo-random bytes.
fn random_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let mut data = vec![0u8; size];
    let mut xof = blake3::Hasher::new()
        .update(name.as_bytes())
        .update(&size.to_le_bytes())
        .finalize_xof();
    xof.fill(&mut data);
    let p = dir.join(name);
    std::fs::write(&p, &data).unwrap();
    p
}

async fn share(api: &Api, path: &Path) -> Value {
    let (code, s) = api
        .post("/api/v1/shares", json!({"path": path.to_str().unwrap()}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{s}");
    s
}

fn error_field(v: &Value) -> Option<&str> {
    v["error"]["field"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_answer_with_the_contract_shapes() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);

        let (code, s) = api.get("/api/v1/status").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(s["peer_id"], d.state().peer().peer_id().to_string());
        assert!(!s["addresses"].as_array().unwrap().is_empty(), "{s}");
        assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
        let lower = api
            .client
            .get(format!("{}/api/v1/status", api.base))
            .header("authorization", format!("bearer {}", api.token))
            .send()
            .await
            .unwrap();
        assert_eq!(
            lower.status(),
            StatusCode::OK,
            "the scheme is case-insensitive"
        );

        let (code, v) = api.get("/api/v1/shares").await;
        assert_eq!((code, v), (StatusCode::OK, json!([])));
        let f = random_file(tmp.path(), "a.bin", 300_000);
        let s = share(&api, &f).await;
        assert_eq!(s["kind"], "file");
        assert_eq!(s["size"], 300_000);
        // Unlisted by default, as the CLI and the web UI (the API used to
        // default to public).
        assert_eq!(s["public"], false);
        assert_eq!(s["visibility"], "unlisted");
        assert!(s["ticket"].as_str().unwrap().starts_with("shoal1"));
        // Asked for: public, through either form; contradicting forms are refused.
        let (code, p) = api
            .post(
                "/api/v1/shares",
                json!({"path": f.to_str().unwrap(), "visibility": "public"}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{p}");
        assert_eq!((&p["public"], &p["visibility"]), (&json!(true), &json!("public")));
        let (code, p) = api
            .post(
                "/api/v1/shares",
                json!({"path": f.to_str().unwrap(), "public": true}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{p}");
        assert_eq!(p["visibility"], "public");
        let (code, e) = api
            .post(
                "/api/v1/shares",
                json!({"path": f.to_str().unwrap(), "public": true, "visibility": "private"}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(error_field(&e), Some("public"));
        let (code, e) = api
            .post(
                "/api/v1/shares",
                json!({"path": f.to_str().unwrap(), "allow": ["not a peer"], "visibility": "private"}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(error_field(&e), Some("allow[0]"));
        let (code, e) = api
            .post(
                "/api/v1/shares",
                json!({"path": f.to_str().unwrap(), "allow": [d.state().peer().peer_id().to_string()]}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(error_field(&e), Some("allow"), "an allowlist needs a private share");
        let (_, v) = api.get("/api/v1/shares").await;
        assert_eq!(v.as_array().unwrap().len(), 1);
        let folder = tmp.path().join("folder");
        std::fs::create_dir_all(folder.join("sub")).unwrap();
        random_file(&folder, "x", 1000);
        random_file(&folder.join("sub"), "y", 2000);
        let (code, c) = api
            .post(
                "/api/v1/shares",
                json!({"path": folder.to_str().unwrap(), "public": false}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{c}");
        assert_eq!(
            (c["kind"].as_str(), c["files"].as_u64()),
            (Some("folder"), Some(2))
        );
        assert_eq!(c["public"], false);
        let id = s["id"].as_str().unwrap();
        let (code, _) = api
            .call(Method::DELETE, &format!("/api/v1/shares/{id}"), None)
            .await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (code, e) = api
            .call(Method::DELETE, &format!("/api/v1/shares/{id}"), None)
            .await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(e["error"]["code"], "not_found");

        let (code, v) = api.get("/api/v1/transfers").await;
        assert_eq!((code, v), (StatusCode::OK, json!([])));
        let (code, v) = api.get("/api/v1/peers").await;
        assert_eq!(code, StatusCode::OK);
        assert!(v.is_array());
        let (code, v) = api.get("/api/v1/settings").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["upload_limit"], Value::Null);
        assert_eq!(v["max_connections"], 256);

        // The web UI and the metrics need no token.
        // The page carries its security headers.
        let resp = api.client.get(format!("{}/", api.base)).send().await.unwrap();
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        let (code, html) = api.raw("/").await;
        assert_eq!(code, StatusCode::OK);
        assert!(html.contains("<"), "{html}");
        assert_eq!(api.raw("/assets/app.js").await.0, StatusCode::OK);
        assert_eq!(api.raw("/assets/app.css").await.0, StatusCode::OK);
        let (code, m) = api.raw("/metrics").await;
        assert_eq!(code, StatusCode::OK);
        assert!(m.contains("shoal_shares 1"), "{m}");

        // Discovery files.
        let dir = tmp.path().join("d");
        let info: Value =
            serde_json::from_slice(&std::fs::read(dir.join("daemon.json")).unwrap()).unwrap();
        assert_eq!(info["pid"], std::process::id());
        assert_eq!(info["api"], d.api_addr().to_string());
        let token = std::fs::read_to_string(dir.join("api.token")).unwrap();
        assert_eq!(token, d.token());
        assert_eq!(token.len(), 64);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("api.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(shoal_daemon::discovery::running(&dir).is_some());
        d.shutdown().await;
        assert!(
            !dir.join("daemon.json").exists(),
            "daemon.json is removed on a clean exit"
        );
        assert!(shoal_daemon::discovery::running(&dir).is_none());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_refuses_a_missing_or_wrong_token() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(tmp.path()).await;
        let api = Api::new(&d);
        let id = "ab".repeat(32);
        let routes: Vec<(Method, String)> = vec![
            (Method::GET, "/api/v1/status".into()),
            (Method::GET, "/api/v1/shares".into()),
            (Method::POST, "/api/v1/shares".into()),
            (Method::DELETE, format!("/api/v1/shares/{id}")),
            (Method::GET, "/api/v1/transfers".into()),
            (Method::POST, "/api/v1/transfers".into()),
            (Method::GET, format!("/api/v1/transfers/{id}")),
            (Method::PATCH, format!("/api/v1/transfers/{id}")),
            (Method::POST, format!("/api/v1/transfers/{id}/pause")),
            (Method::POST, format!("/api/v1/transfers/{id}/resume")),
            (Method::POST, format!("/api/v1/transfers/{id}/cancel")),
            (Method::GET, "/api/v1/peers".into()),
            (Method::GET, "/api/v1/settings".into()),
            (Method::PATCH, "/api/v1/settings".into()),
            (Method::GET, "/api/v1/events".into()),
            (Method::GET, "/api/v1/openapi.json".into()),
            (Method::GET, "/api/v1/fs".into()),
            (Method::GET, "/api/v1/qr?text=x".into()),
        ];
        for (m, path) in &routes {
            for token in [None, Some("0".repeat(64)), Some(format!("{}x", d.token()))] {
                let mut r = api.client.request(m.clone(), format!("{}{path}", api.base));
                if let Some(t) = &token {
                    r = r.bearer_auth(t);
                }
                let resp = r.json(&json!({})).send().await.unwrap();
                assert_eq!(
                    resp.status(),
                    StatusCode::UNAUTHORIZED,
                    "{m} {path} {token:?}"
                );
                assert_eq!(
                    resp.headers()
                        .get("www-authenticate")
                        .map(|v| v.to_str().unwrap()),
                    Some("Bearer")
                );
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["error"]["code"], "unauthorized", "{m} {path}");
                assert!(v["error"]["message"].as_str().unwrap().contains("token"));
            }
        }
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_400_or_422_naming_the_field_and_unknown_ids_404() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);
        // Malformed JSON.
        let resp = api
            .client
            .post(format!("{}/api/v1/shares", api.base))
            .bearer_auth(&api.token)
            .header("content-type", "application/json")
            .body("{\"path\": ")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["error"]["code"], "bad_request");
        // Not JSON at all.
        let resp = api
            .client
            .post(format!("{}/api/v1/shares", api.base))
            .bearer_auth(&api.token)
            .body("path=/tmp")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        // One JSON object, nothing before or after it: raw bodies and the
        // answer each must get.
        for (path, method, body) in [
            ("/api/v1/shares", Method::POST, r#"{"path":"/tmp"}xyz"#),
            ("/api/v1/shares", Method::POST, r#"{"path":"/tmp"} {}"#),
            ("/api/v1/settings", Method::PATCH, "[]"),
            ("/api/v1/settings", Method::PATCH, "[1, 2, 3, 4]"),
            ("/api/v1/settings", Method::PATCH, "42"),
            ("/api/v1/transfers", Method::POST, "\"shoal1\""),
        ] {
            let resp = api
                .client
                .request(method.clone(), format!("{}{path}", api.base))
                .bearer_auth(&api.token)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let code = resp.status();
            let v: Value = serde_json::from_str(&resp.text().await.unwrap()).unwrap_or(Value::Null);
            assert_eq!(
                code,
                StatusCode::BAD_REQUEST,
                "{method} {path} {body} -> {v}"
            );
            assert_eq!(v["error"]["code"], "bad_request", "{body} -> {v}");
        }
        // Rates beyond any real link are refused, not stored.
        let id = "cd".repeat(32);
        for (method, path, body, field) in [
            (
                Method::PATCH,
                "/api/v1/settings".to_owned(),
                json!({"upload_limit": u64::MAX}),
                "upload_limit",
            ),
            (
                Method::PATCH,
                "/api/v1/settings".to_owned(),
                json!({"download_limit": (1u64 << 40) + 1}),
                "download_limit",
            ),
            (
                Method::POST,
                "/api/v1/transfers".to_owned(),
                json!({"ticket": id, "download_limit": u64::MAX}),
                "download_limit",
            ),
        ] {
            let (code, v) = api.call(method, &path, Some(body.clone())).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {v}");
            assert_eq!(error_field(&v), Some(field), "{body} -> {v}");
        }
        let (_, st) = api.get("/api/v1/settings").await;
        assert_eq!(st["upload_limit"], Value::Null, "{st}");
        // Too big.
        let big = "x".repeat(70 * 1024);
        let (code, v) = api.post("/api/v1/shares", json!({ "path": big })).await;
        assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{v}");

        let cases = [
            (json!({}), "path"),
            (json!({"path": "relative/file"}), "path"),
            (json!({"path": "/nonexistent/shoal/file"}), "path"),
            (json!({"path": 42}), "path"),
            (json!({"path": "/tmp", "public": "yes"}), "public"),
        ];
        for (body, field) in cases {
            let (code, v) = api.post("/api/v1/shares", body.clone()).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {v}");
            assert_eq!(v["error"]["code"], "unprocessable");
            assert_eq!(error_field(&v), Some(field), "{body} -> {v}");
            assert!(!v["error"]["message"].as_str().unwrap().is_empty());
        }
        let id = "cd".repeat(32);
        let cases = [
            (json!({"ticket": "shoal1garbage"}), "ticket"),
            (json!({"ticket": "hello"}), "ticket"),
            (json!({"output": "/tmp"}), "ticket"),
            (json!({"ticket": id, "output": "rel/dir"}), "output"),
            (json!({"ticket": id, "output": "/proc/self"}), "output"),
            (json!({"ticket": id, "output": "/sys/kernel"}), "output"),
            (
                json!({"ticket": id, "output": "/dev/shm/../null"}),
                "output",
            ),
            (
                json!({"ticket": id, "download_limit": -1}),
                "download_limit",
            ),
            (json!({"ticket": id, "name": "../up"}), "name"),
        ];
        for (body, field) in cases {
            let (code, v) = api.post("/api/v1/transfers", body.clone()).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {v}");
            assert_eq!(error_field(&v), Some(field), "{body} -> {v}");
        }
        for (m, path) in [
            (Method::GET, "/api/v1/transfers/nothex"),
            (Method::POST, "/api/v1/transfers/1234/pause"),
            (Method::DELETE, "/api/v1/shares/zz"),
        ] {
            let (code, v) = api.call(m, path, None).await;
            assert_eq!(code, StatusCode::BAD_REQUEST, "{path} -> {v}");
            assert_eq!(error_field(&v), Some("id"));
        }
        for (m, path) in [
            (Method::GET, format!("/api/v1/transfers/{id}")),
            (Method::POST, format!("/api/v1/transfers/{id}/pause")),
            (Method::POST, format!("/api/v1/transfers/{id}/resume")),
            (Method::POST, format!("/api/v1/transfers/{id}/cancel")),
            (Method::DELETE, format!("/api/v1/shares/{id}")),
            (Method::GET, "/api/v1/nothing".to_owned()),
        ] {
            let (code, v) = api.call(m, &path, None).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{path} -> {v}");
            assert_eq!(v["error"]["code"], "not_found");
        }
        let (code, v) = api
            .call(
                Method::PATCH,
                &format!("/api/v1/transfers/{id}"),
                Some(json!({"download_limit": 5})),
            )
            .await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{v}");
        for (body, field) in [
            (json!({"upload_limit": -5}), "upload_limit"),
            (json!({"max_connections": 0}), "max_connections"),
            (
                json!({"max_peers_per_transfer": "many"}),
                "max_peers_per_transfer",
            ),
            (json!({"speed": 1}), "speed"),
        ] {
            let (code, v) = api
                .call(Method::PATCH, "/api/v1/settings", Some(body.clone()))
                .await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body} -> {v}");
            assert_eq!(error_field(&v), Some(field), "{body} -> {v}");
        }
        d.shutdown().await;
    })
    .await;
}

/// Two transfers of different contents never save to the same path: the
/// second is refused with 409 naming the first, before anything starts; under
/// another name it is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_saving_where_another_saves_is_a_conflict() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);
        let out = tmp.path().join("out");
        let out = out.to_str().unwrap();
        let (a, b) = ("ab".repeat(32), "cd".repeat(32));
        // The same content again is the existing transfer (200), not a conflict.
        for (ticket, name, want) in [
            (&a, "same.bin", StatusCode::CREATED),
            (&b, "same.bin", StatusCode::CONFLICT),
            (&a, "same.bin", StatusCode::OK),
            (&b, "other.bin", StatusCode::CREATED),
        ] {
            let (code, v) = api
                .post(
                    "/api/v1/transfers",
                    json!({"ticket": ticket, "output": out, "name": name}),
                )
                .await;
            assert_eq!(code, want, "{ticket} as {name}: {v}");
            if want == StatusCode::CONFLICT {
                assert_eq!(v["error"]["code"], "conflict");
                let msg = v["error"]["message"].as_str().unwrap();
                assert!(msg.contains(&a) && msg.contains("same.bin"), "{msg}");
            }
        }
        let (_, list) = api.get("/api/v1/transfers").await;
        assert_eq!(list.as_array().unwrap().len(), 2, "{list}");
        d.shutdown().await;
    })
    .await;
}

/// Reads SSE events (name, data) from a response until `stop` says so.
async fn read_events(
    resp: reqwest::Response,
    mut stop: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut out = Vec::new();
    let mut name = String::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(i) = buf.find('\n') {
            let line = buf[..i].trim_end_matches('\r').to_owned();
            buf.drain(..=i);
            if let Some(n) = line.strip_prefix("event:") {
                name = n.trim().to_owned();
            } else if let Some(d) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(d.trim()).unwrap();
                let done = stop(&name, &v);
                out.push((name.clone(), v));
                if done {
                    return out;
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn download_between_two_daemons_streams_events_to_seeding_and_counts_bytes() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(&tmp.path().join("a")).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let src = random_file(tmp.path(), "movie.bin", 3 << 20);
        let s = share(&aa, &src).await;
        let id = s["id"].as_str().unwrap().to_owned();

        let events = ab
            .client
            .get(format!("{}/api/v1/events", ab.base))
            .bearer_auth(&ab.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), StatusCode::OK);
        assert!(events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let out = tmp.path().join("out");
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap(), "name": "movie.bin"}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        assert_eq!(t["id"], id);
        let idc = id.clone();
        let seen = read_events(events, |n, v| n == "transfer" && v["id"] == idc && v["state"] == "seeding").await;
        let last = &seen.last().unwrap().1;
        assert_eq!(last["state"], "seeding", "{seen:?}");
        assert_eq!(last["progress"], 1.0);
        assert_eq!(last["total_bytes"], 3 << 20);
        assert!(seen.iter().all(|(n, _)| n == "transfer"), "{seen:?}");
        assert_eq!(
            std::fs::read(out.join("movie.bin")).unwrap(),
            std::fs::read(&src).unwrap(),
            "the downloaded bytes are the shared ones"
        );
        // Adding the same content again answers the existing transfer.
        let (code, again) = ab.post("/api/v1/transfers", json!({"ticket": id})).await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(again["id"], id);
        let (_, list) = ab.get("/api/v1/transfers").await;
        assert_eq!(list.as_array().unwrap().len(), 1);

        let (_, peers) = ab.get("/api/v1/peers").await;
        let a_id = a.state().peer().peer_id().to_string();
        assert!(
            peers.as_array().unwrap().iter().any(|p| p["peer_id"] == a_id),
            "{peers}"
        );

        let (code, m) = ab.raw("/metrics").await;
        assert_eq!(code, StatusCode::OK);
        let mut names = std::collections::HashMap::new();
        for line in m.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let (name, value) = line.rsplit_once(' ').expect("metric lines are NAME VALUE");
            assert!(name.starts_with("shoal_"), "{line}");
            let v: f64 = value.parse().expect("metric values are numbers");
            names.insert(name.to_owned(), v);
        }
        assert!(names["shoal_bytes_downloaded_total"] >= (3 << 20) as f64, "{m}");
        assert_eq!(names["shoal_transfers{state=\"seeding\"}"], 1.0, "{m}");
        assert!(names.contains_key("shoal_peers_connected{path=\"direct\"}"));
        assert!(names.contains_key("shoal_pieces_verified_total"));
        assert!(names.contains_key(&format!("shoal_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))));
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_keeps_progress_and_resume_completes() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start_slow(&tmp.path().join("a"), 1 << 20).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let src = random_file(tmp.path(), "f.bin", 4 << 20);
        let s = share(&aa, &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        let (code, _) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED);
        ab.wait_transfer(&id, "partly done", |t| {
            t["done_bytes"].as_u64().unwrap_or(0) > 0
        })
        .await;
        let (code, t) = ab
            .post(&format!("/api/v1/transfers/{id}/pause"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        assert_eq!(t["state"], "paused");
        let done = t["done_bytes"].as_u64().unwrap();
        assert!(done < 4 << 20, "paused before the end: {t}");
        let (code, t) = ab
            .call(
                Method::PATCH,
                &format!("/api/v1/transfers/{id}"),
                Some(json!({"download_limit": 8388608})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        assert_eq!(t["download_limit"], 8388608);
        assert!(
            out.join(format!("f.bin{}", shoal_store::partial::PART_SUFFIX))
                .exists(),
            "progress kept on disk"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (_, t) = ab.get(&format!("/api/v1/transfers/{id}")).await;
        assert_eq!(t["state"], "paused", "a paused transfer stays paused: {t}");
        let (code, t) = ab
            .post(&format!("/api/v1/transfers/{id}/resume"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        assert_ne!(t["state"], "paused");
        ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding")
            .await;
        assert_eq!(
            std::fs::read(out.join("f.bin")).unwrap(),
            std::fs::read(&src).unwrap()
        );
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_forgets_the_transfer_and_deletes_partial_data() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start_slow(&tmp.path().join("a"), 1 << 20).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let src = random_file(tmp.path(), "f.bin", 4 << 20);
        let s = share(&aa, &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        ab.post(
            "/api/v1/transfers",
            json!({"ticket": s["ticket"], "output": out.to_str().unwrap()}),
        )
        .await;
        ab.wait_transfer(&id, "partly done", |t| {
            t["done_bytes"].as_u64().unwrap_or(0) > 0
        })
        .await;
        assert!(out
            .join(format!("f.bin{}", shoal_store::partial::PART_SUFFIX))
            .exists());
        let (code, _) = ab
            .post(&format!("/api/v1/transfers/{id}/cancel"), json!({}))
            .await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        assert!(
            !out.join(format!("f.bin{}", shoal_store::partial::PART_SUFFIX))
                .exists(),
            "partial data deleted"
        );
        assert!(!out.join("f.bin").exists());
        let (code, _) = ab.get(&format!("/api/v1/transfers/{id}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (_, list) = ab.get("/api/v1/transfers").await;
        assert_eq!(list, json!([]));
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_daemon_resumes_its_persisted_transfer() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start_slow(&tmp.path().join("a"), 1 << 20).await;
        let bdir = tmp.path().join("b");
        let b = start(&bdir).await;
        let aa = Api::new(&a);
        let src = random_file(tmp.path(), "f.bin", 4 << 20);
        let s = share(&aa, &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        {
            let ab = Api::new(&b);
            ab.post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap()}),
            )
            .await;
            ab.wait_transfer(&id, "partly done", |t| {
                t["done_bytes"].as_u64().unwrap_or(0) > 0
            })
            .await;
        }
        b.shutdown().await;
        assert!(bdir.join("daemon/transfers.json").exists());
        let b = start(&bdir).await;
        let ab = Api::new(&b);
        let (code, list) = ab.get("/api/v1/transfers").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
        ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding")
            .await;
        assert_eq!(
            std::fs::read(out.join("f.bin")).unwrap(),
            std::fs::read(&src).unwrap()
        );
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_on_the_same_data_dir_is_refused_naming_the_pid() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(tmp.path()).await;
        let err = match Daemon::start(config(tmp.path())).await {
            Ok(_) => panic!("a second daemon started on the same data dir"),
            Err(e) => e,
        };
        assert!(matches!(err, DaemonError::AlreadyRunning { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!(
                "another shoal daemon (pid {}) is running for",
                std::process::id()
            )),
            "{msg}"
        );
        assert!(msg.contains("--data-dir"), "{msg}");
        // The first one is unharmed.
        assert_eq!(Api::new(&d).get("/api/v1/status").await.0, StatusCode::OK);
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_patch_is_applied_saved_and_survives_a_restart() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(tmp.path()).await;
        let api = Api::new(&d);
        let (code, s) = api
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"upload_limit": 1048576, "max_connections": 100})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{s}");
        assert_eq!(s["upload_limit"], 1048576);
        assert_eq!(s["download_limit"], Value::Null);
        assert_eq!(s["max_connections"], 100);
        assert_eq!(
            d.state().peer().net().connection_limits().max_established,
            100,
            "the connection limit applies to the running network"
        );
        let (code, p) = api
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"max_peers_per_transfer": 7})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{p}");
        assert_eq!(
            d.state().peer().node().max_peers(),
            7,
            "the per-transfer peer limit applies to the running node"
        );
        let (_, s) = api
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"max_peers_per_transfer": 50})),
            )
            .await;
        let (_, g) = api.get("/api/v1/settings").await;
        assert_eq!(g, s);
        let (_, s2) = api
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"download_limit": 2048})),
            )
            .await;
        assert_eq!(s2["upload_limit"], 1048576, "fields not patched are kept");
        assert_eq!(s2["download_limit"], 2048);
        let live = d.state().peer().limits();
        assert_eq!(
            (live.upload, live.download),
            (Some(1048576), Some(2048)),
            "the limits apply to the running peer"
        );
        let (_, s3) = api
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"download_limit": null})),
            )
            .await;
        assert_eq!(s3["download_limit"], Value::Null);
        assert_eq!(d.state().peer().limits().download, None);
        let (_, s2) = api
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"download_limit": 2048})),
            )
            .await;
        d.shutdown().await;
        let d = start(tmp.path()).await;
        let (_, g) = Api::new(&d).get("/api/v1/settings").await;
        assert_eq!(g, s2, "settings persist across a restart");
        assert_eq!(d.state().peer().limits().upload, Some(1048576));
        d.shutdown().await;
        // Flags and environment variables (pinned) win over saved settings.
        let mut cfg = config(tmp.path());
        cfg.pinned.upload_limit = Some(Some(4096));
        let d = Daemon::start(cfg).await.unwrap();
        let (_, g) = Api::new(&d).get("/api/v1/settings").await;
        assert_eq!(g["upload_limit"], 4096);
        assert_eq!(g["download_limit"], 2048);
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_route_and_the_bearer_scheme() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(tmp.path()).await;
        let (code, doc) = Api::new(&d).get("/api/v1/openapi.json").await;
        assert_eq!(code, StatusCode::OK);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = &doc["paths"];
        for (p, m) in [
            ("/api/v1/status", "get"),
            ("/api/v1/shares", "get"),
            ("/api/v1/shares", "post"),
            ("/api/v1/shares/{id}", "delete"),
            ("/api/v1/transfers", "get"),
            ("/api/v1/transfers", "post"),
            ("/api/v1/transfers/{id}", "get"),
            ("/api/v1/transfers/{id}", "patch"),
            ("/api/v1/transfers/{id}/pause", "post"),
            ("/api/v1/transfers/{id}/resume", "post"),
            ("/api/v1/transfers/{id}/cancel", "post"),
            ("/api/v1/peers", "get"),
            ("/api/v1/settings", "get"),
            ("/api/v1/settings", "patch"),
            ("/api/v1/events", "get"),
            ("/api/v1/openapi.json", "get"),
            ("/api/v1/fs", "get"),
            ("/api/v1/qr", "get"),
            ("/metrics", "get"),
        ] {
            assert!(
                paths[p][m].is_object(),
                "{m} {p} missing from the OpenAPI document"
            );
        }
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"]
                .as_str()
                .map(str::to_lowercase),
            Some("bearer".to_owned())
        );
        for s in [
            "Transfer",
            "TransferPeer",
            "ShareView",
            "Settings",
            "Status",
            "PeerView",
            "ErrorBody",
            "ServedPeerView",
            "Totals",
            "FsListing",
        ] {
            assert!(
                doc["components"]["schemas"][s].is_object(),
                "schema {s} missing"
            );
        }
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_downloads_as_a_collection_and_ends_completed() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(&tmp.path().join("a")).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let folder = tmp.path().join("photos");
        std::fs::create_dir_all(folder.join("2024")).unwrap();
        let x = random_file(&folder, "x.jpg", 700_000);
        let y = random_file(&folder.join("2024"), "y.jpg", 5_000);
        let (code, s) = aa
            .post(
                "/api/v1/shares",
                json!({"path": folder.to_str().unwrap(), "public": false}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{s}");
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap(), "name": "photos"}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        assert_eq!(t["kind"], "folder");
        let t = ab
            .wait_transfer(&id, "seeding (complete)", |t| t["state"] == "seeding")
            .await;
        assert_eq!(t["progress"], 1.0);
        assert_eq!(t["total_bytes"], 705_000);
        assert_eq!(
            std::fs::read(out.join("photos/x.jpg")).unwrap(),
            std::fs::read(&x).unwrap()
        );
        assert_eq!(
            std::fs::read(out.join("photos/2024/y.jpg")).unwrap(),
            std::fs::read(&y).unwrap()
        );
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_stream_starts_with_the_transfers_then_reports_every_change() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);
        // Content nobody has: the transfer stays queued.
        let missing = "ef".repeat(32);
        let out = tmp.path().join("out");
        let (code, _) = api
            .post(
                "/api/v1/transfers",
                json!({"ticket": missing, "output": out.to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED);
        let events = api
            .client
            .get(format!("{}/api/v1/events", api.base))
            .bearer_auth(&api.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), StatusCode::OK);
        let reader = tokio::spawn(read_events(events, |n, _| n == "settings"));
        let f = random_file(tmp.path(), "s.bin", 1000);
        let s = share(&api, &f).await;
        let sid = s["id"].as_str().unwrap().to_owned();
        let (code, _) = api
            .call(Method::DELETE, &format!("/api/v1/shares/{sid}"), None)
            .await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (code, _) = api
            .post(&format!("/api/v1/transfers/{missing}/cancel"), json!({}))
            .await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (code, _) = api
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"upload_limit": 1000})),
            )
            .await;
        assert_eq!(code, StatusCode::OK);
        let seen = reader.await.unwrap();
        assert_eq!(seen[0].0, "transfer", "{seen:?}");
        assert_eq!(seen[0].1["id"], missing);
        assert_eq!(seen[0].1["state"], "queued");
        let pos = |name: &str, pred: &dyn Fn(&Value) -> bool| {
            seen.iter()
                .position(|(n, v)| n == name && pred(v))
                .unwrap_or_else(|| panic!("no {name} event in {seen:?}"))
        };
        let added = pos("share", &|v| v["id"] == sid);
        let removed = pos("share_removed", &|v| v["id"] == sid);
        let cancelled = pos("transfer_removed", &|v| v["id"] == missing);
        let settings = pos("settings", &|v| v["upload_limit"] == 1000);
        assert!(
            added < removed && removed < cancelled && cancelled < settings,
            "{seen:?}"
        );
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_download_limit_paces_the_download() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(&tmp.path().join("a")).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let src = random_file(tmp.path(), "f.bin", 3 << 20);
        let s = share(&aa, &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        let started = std::time::Instant::now();
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap(), "download_limit": 1048576}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        assert_eq!(t["download_limit"], 1048576);
        ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding").await;
        let secs = started.elapsed().as_secs_f64();
        // 3 MiB at 1 MiB/s: well over 1.5 s even with the bucket's burst.
        assert!(secs >= 1.5, "3 MiB at 1 MiB/s took only {secs:.2} s");
        assert_eq!(std::fs::read(out.join("f.bin")).unwrap(), std::fs::read(&src).unwrap());
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_routes_manage_policy_allowlist_invites_and_answer_errors() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);
        let f = random_file(tmp.path(), "p.bin", 5000);
        let (code, s) = api
            .post(
                "/api/v1/shares",
                json!({"path": f.to_str().unwrap(), "visibility": "private"}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{s}");
        let id = s["id"].as_str().unwrap().to_owned();
        let me = d.state().peer().peer_id().to_string();

        let (code, a) = api.get(&format!("/api/v1/shares/{id}/access")).await;
        assert_eq!(code, StatusCode::OK, "{a}");
        assert_eq!(a["share"]["visibility"], "private");
        assert_eq!(a["allow"], json!([]));

        let (code, a) = api
            .post(
                &format!("/api/v1/shares/{id}/allow"),
                json!({"peer_id": me}),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{a}");
        assert_eq!(a["allow"], json!([me]));
        let (code, e) = api
            .post(
                &format!("/api/v1/shares/{id}/allow"),
                json!({"peer_id": "x"}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(error_field(&e), Some("peer_id"));
        let (code, a) = api
            .call(
                Method::DELETE,
                &format!("/api/v1/shares/{id}/allow/{me}"),
                None,
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{a}");
        assert_eq!(a["allow"], json!([]));

        let (code, v) = api
            .call(
                Method::PATCH,
                &format!("/api/v1/shares/{id}"),
                Some(json!({"visibility": "unlisted"})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["visibility"], "unlisted");

        let (code, inv) = api
            .post(
                &format!("/api/v1/shares/{id}/invites"),
                json!({"expires_in": "1h", "uses": 2, "to": me}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{inv}");
        assert_eq!(inv["state"], "active");
        assert_eq!(inv["max_uses"], 2);
        assert_eq!(inv["recipient"], me.as_str());
        let ticket: shoal_core::Ticket = inv["ticket"].as_str().unwrap().parse().unwrap();
        let cap = ticket.capability.expect("the ticket carries the invite");
        let decoded = shoal_core::Invite::decode(&cap).unwrap();
        assert!(decoded.verify_signature());
        assert_eq!(decoded.issuer_peer().to_string(), me);
        for (body, field) in [
            (json!({"expires_in": "soon"}), "expires_in"),
            (json!({"uses": 0}), "uses"),
            (json!({"to": "nobody"}), "to"),
        ] {
            let (code, e) = api
                .post(&format!("/api/v1/shares/{id}/invites"), body.clone())
                .await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
            assert_eq!(error_field(&e), Some(field), "{body}: {e}");
        }
        let iid = inv["id"].as_str().unwrap();
        let (code, r) = api
            .post(&format!("/api/v1/invites/{iid}/revoke"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{r}");
        assert_eq!(r["state"], "revoked");
        let (code, list) = api.get("/api/v1/invites").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(list[0]["state"], "revoked", "{list}");
        let (code, e) = api
            .post(
                &format!("/api/v1/invites/{}/revoke", "ab".repeat(16)),
                json!({}),
            )
            .await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{e}");
        let (code, e) = api.post("/api/v1/invites/zz/revoke", json!({})).await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");

        // Unknown share: 404 on every access route.
        let other = "0".repeat(64);
        for path in ["access", "invites", "access-log"] {
            let (code, e) = api.get(&format!("/api/v1/shares/{other}/{path}")).await;
            assert_eq!(code, StatusCode::NOT_FOUND, "{path}: {e}");
        }
        let (code, log) = api.get("/api/v1/access-log").await;
        assert_eq!((code, log), (StatusCode::OK, json!([])));
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_connection_flood_is_bounded() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(&tmp.path().join("d"));
        cfg.api_max_connections = 20;
        cfg.api_idle = Duration::from_secs(2);
        let d = Daemon::start(cfg).await.expect("daemon starts");
        let api = Api::new(&d);
        let addr = api.base.trim_start_matches("http://").to_owned();
        // 60 connections that send half a request and then nothing: three
        // times the cap.
        let mut flood = Vec::new();
        for _ in 0..60 {
            let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
            use tokio::io::AsyncWriteExt;
            s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
                .await
                .unwrap();
            flood.push(s);
        }
        // The API still answers (once idle connections are closed), within
        // a few idle periods, not never.
        let started = std::time::Instant::now();
        let (code, v) = api.get("/api/v1/status").await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "answered after {:?}",
            started.elapsed()
        );
        // Every flood connection is closed by the daemon (it reads EOF or an
        // error), so nothing stays held.
        for mut s in flood {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let r = tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await;
            assert!(
                matches!(r, Ok(Ok(0)) | Ok(Err(_))),
                "a flood connection was not closed: {r:?}"
            );
        }
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_headers_trickled_byte_by_byte_are_cut_off() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(&tmp.path().join("d"));
        cfg.api_header = Duration::from_secs(2);
        let d = Daemon::start(cfg).await.expect("daemon starts");
        let api = Api::new(&d);
        let addr = api.base.trim_start_matches("http://").to_owned();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // A request whose headers come one byte every 300 ms: bytes keep
        // moving, so the idle timeout (60 s) never fires; the header deadline
        // does.
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let started = std::time::Instant::now();
        let head = b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
        let mut closed = None;
        for b in head {
            if s.write_all(&[*b]).await.is_err() {
                closed = Some(started.elapsed());
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await {
                Ok(Ok(_)) | Ok(Err(_)) => {
                    // EOF, an error or an error response: the server gave up.
                    closed = Some(started.elapsed());
                    break;
                }
                Err(_) => {}
            }
        }
        let closed = closed.expect("the trickled request was never cut off");
        assert!(
            closed >= Duration::from_millis(1_500) && closed < Duration::from_secs(10),
            "cut off after {closed:?}"
        );
        // A normal request on a new connection is answered.
        let (code, v) = api.get("/api/v1/status").await;
        assert_eq!(code, StatusCode::OK, "{v}");
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_is_answered_in_json() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);
        let id = "cd".repeat(32);
        // (method, path, content type, body, expected status)
        type Case<'a> = (Method, String, Option<&'a str>, Option<&'a str>, u16);
        let cases: Vec<Case> = vec![
            (
                Method::GET,
                "/api/v1/shares/%FF/access".into(),
                None,
                None,
                400,
            ),
            (
                Method::DELETE,
                "/api/v1/shares/%FF%FE".into(),
                None,
                None,
                400,
            ),
            (
                Method::GET,
                "/api/v1/transfers/%C3%28".into(),
                None,
                None,
                400,
            ),
            (
                Method::POST,
                "/api/v1/shares/%FF/allow".into(),
                Some("application/json"),
                Some("{}"),
                400,
            ),
            (Method::PUT, "/api/v1/status".into(), None, None, 405),
            (Method::DELETE, "/api/v1/settings".into(), None, None, 405),
            (Method::GET, "/api/v1/nothing/here".into(), None, None, 404),
            (
                Method::POST,
                "/api/v1/shares".into(),
                Some("text/plain"),
                Some("{\"path\":\"/tmp\"}"),
                400,
            ),
            (
                Method::POST,
                "/api/v1/shares".into(),
                Some("application/json"),
                None,
                400,
            ),
            (
                Method::POST,
                "/api/v1/shares".into(),
                Some("application/json"),
                Some("{\"path\": "),
                400,
            ),
            (
                Method::POST,
                "/api/v1/shares".into(),
                Some("application/json"),
                Some("{\"path\":\"/tmp\"}xyz"),
                400,
            ),
            (
                Method::PATCH,
                "/api/v1/settings".into(),
                Some("application/json"),
                Some("[]"),
                400,
            ),
            (
                Method::PATCH,
                format!("/api/v1/transfers/{id}"),
                Some("application/json"),
                Some("null"),
                400,
            ),
        ];
        let mut wrong = Vec::new();
        for (m, path, ctype, body, want) in cases {
            let mut r = api
                .client
                .request(m.clone(), format!("{}{path}", api.base))
                .bearer_auth(&api.token);
            if let Some(c) = ctype {
                r = r.header("content-type", c);
            }
            if let Some(b) = body {
                r = r.body(b.to_owned());
            }
            let resp = r.send().await.expect("request sent");
            let code = resp.status().as_u16();
            let ct = resp
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let text = resp.text().await.unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if code != want
                || !ct.starts_with("application/json")
                || !v["error"]["code"].is_string()
                || v["error"]["message"].as_str().unwrap_or("").is_empty()
            {
                wrong.push(format!(
                    "{m} {path}: {code} {ct:?} {text:?} (want {want}, JSON)"
                ));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_sites_cannot_use_the_api() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);
        let own = api.base.trim_start_matches("http://").to_owned();
        // Every route of the OpenAPI document, ids filled in.
        let (code, doc) = api.get("/api/v1/openapi.json").await;
        assert_eq!(code, StatusCode::OK);
        let id = "ab".repeat(32);
        let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let mut routes: Vec<(Method, String)> = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for m in item.as_object().expect("methods").keys() {
                let Ok(method) = m.to_uppercase().parse::<Method>() else {
                    continue;
                };
                let p = path
                    .replace("{id}", &id)
                    .replace("{peer_id}", peer)
                    .replace("{invite_id}", &"cd".repeat(16));
                routes.push((method, p));
            }
        }
        assert!(
            routes.len() >= 20,
            "only {} routes in the document",
            routes.len()
        );
        routes.push((Method::GET, "/metrics".into()));
        routes.push((Method::GET, "/".into()));
        let send = |m: &Method, path: &str, host: Option<&str>, origin: Option<&str>| {
            let mut r = api
                .client
                .request(m.clone(), format!("{}{path}", api.base))
                .bearer_auth(&api.token)
                .json(&json!({}));
            if let Some(h) = host {
                r = r.header("host", h);
            }
            if let Some(o) = origin {
                r = r.header("origin", o);
            }
            r.send()
        };
        for (m, path) in &routes {
            for (host, origin) in [
                (Some("evil.example"), None),
                (Some("evil.example:8080"), None),
                (Some("localhost.evil.example"), None),
                (None, Some("http://evil.example")),
                (None, Some("https://127.0.0.1")),
                (None, Some("null")),
            ] {
                let resp = send(m, path, host, origin).await.unwrap();
                assert_eq!(
                    resp.status(),
                    StatusCode::FORBIDDEN,
                    "{m} {path} host {host:?} origin {origin:?}"
                );
                let v: Value = resp.json().await.unwrap();
                assert_eq!(v["error"]["code"], "forbidden", "{m} {path}");
            }
        }
        // The daemon's own names and its own origin still work.
        for (host, origin) in [
            (Some(own.as_str()), None),
            (Some(&*format!("localhost:{}", d.api_addr().port())), None),
            (None, Some(format!("http://{own}").as_str())),
        ] {
            let resp = send(&Method::GET, "/api/v1/status", host, origin)
                .await
                .unwrap();
            assert_eq!(
                resp.status(),
                StatusCode::OK,
                "host {host:?} origin {origin:?}"
            );
        }
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_token_survives_a_restart_unless_others_could_read_it() {
    bounded(async {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        let d = start(&dir).await;
        let first = d.token().to_owned();
        d.shutdown().await;
        // Kept: open pages and bookmarks keep working.
        let d = start(&dir).await;
        assert_eq!(d.token(), first);
        let (code, v) = Api::new(&d).get("/api/v1/status").await;
        assert_eq!(code, StatusCode::OK, "{v}");
        d.shutdown().await;
        let file = dir.join("api.token");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // A token file others could read may have been seen: a new token.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let d = start(&dir).await;
        let second = d.token().to_owned();
        assert_ne!(second, first, "a world-readable token was kept");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        d.shutdown().await;
        // A damaged one too; a deleted one is written anew.
        std::fs::write(&file, "not a token").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let d = start(&dir).await;
        let third = d.token().to_owned();
        assert!(third != second && third.len() == 64, "{third}");
        d.shutdown().await;
        std::fs::remove_file(&file).unwrap();
        let d = start(&dir).await;
        assert!(d.token() != third && d.token().len() == 64);
        d.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeding_download_seeds_again_after_a_restart_with_its_source_gone() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(&tmp.path().join("a")).await;
        let bdir = tmp.path().join("b");
        let b = start(&bdir).await;
        let src = random_file(tmp.path(), "f.bin", 3 << 20);
        let s = share(&Api::new(&a), &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        {
            let ab = Api::new(&b);
            let (code, t) = ab
                .post(
                    "/api/v1/transfers",
                    json!({"ticket": s["ticket"], "output": out.to_str().unwrap()}),
                )
                .await;
            assert_eq!(code, StatusCode::CREATED, "{t}");
            ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding")
                .await;
        }
        // Both stop; only B comes back: nobody else has the content.
        b.shutdown().await;
        a.shutdown().await;
        let b = start(&bdir).await;
        let ab = Api::new(&b);
        ab.wait_transfer(&id, "seeding again", |t| t["state"] == "seeding")
            .await;
        // And it serves: a third daemon downloads from B alone.
        let (_, st) = ab.get("/api/v1/status").await;
        let ticket = shoal_core::Ticket {
            id: id.parse().unwrap(),
            kind: shoal_core::Kind::File,
            providers: vec![shoal_core::Provider {
                peer: st["peer_id"].as_str().unwrap().parse().unwrap(),
                addrs: st["ticket_addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().parse().unwrap())
                    .collect(),
            }],
            capability: None,
            name: Some("f.bin".into()),
        };
        let c = start(&tmp.path().join("c")).await;
        let ac = Api::new(&c);
        let out_c = tmp.path().join("out-c");
        // At 1 MiB/s C takes about 3 s: B is seen serving it.
        let (code, t) = ac
            .post(
                "/api/v1/transfers",
                json!({"ticket": ticket.to_string(), "output": out_c.to_str().unwrap(), "download_limit": 1 << 20}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        // B's transfer lists C while it serves it, with where C came from and
        // what C holds.
        let (_, st_c) = ac.get("/api/v1/status").await;
        let peer_c = st_c["peer_id"].as_str().unwrap().to_owned();
        let t = ab
            .wait_transfer(&id, "C listed with its address", |t| {
                t["peers"].as_array().unwrap().iter().any(|p| {
                    p["peer_id"] == peer_c.as_str() && p["address"].is_string()
                })
            })
            .await;
        let c_row = t["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["peer_id"] == peer_c.as_str())
            .unwrap();
        assert!(c_row["address"].as_str().unwrap().contains("127.0.0.1"), "{c_row}");
        let has = c_row["progress"].as_f64().expect("C's progress");
        assert!((0.0..=1.0).contains(&has), "{c_row}");
        ac.wait_transfer(&id, "downloaded from B", |t| t["state"] == "seeding")
            .await;
        assert_eq!(
            std::fs::read(out_c.join("f.bin")).unwrap(),
            std::fs::read(&src).unwrap()
        );
        // Paused, it stops; resumed, it seeds again (no provider needed).
        let (code, t) = ab
            .post(&format!("/api/v1/transfers/{id}/pause"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        assert_eq!(t["state"], "completed");
        c.shutdown().await;
        let (code, t) = ab
            .post(&format!("/api/v1/transfers/{id}/resume"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        ab.wait_transfer(&id, "seeding after resume", |t| t["state"] == "seeding")
            .await;
        b.shutdown().await;
    })
    .await;
}

/// A completed download resumed seeds again almost at once, racing the
/// resume's own answer: the event stream still carries the transfer's changes
/// in order (revisions grow) and ends with its current state, and a response
/// older than an event has the lower revision, so a client can keep the newer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_events_follow_the_order_of_changes_and_revisions_grow() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(&tmp.path().join("a")).await;
        let b = start(&tmp.path().join("b")).await;
        let src = random_file(tmp.path(), "f.bin", 256 << 10);
        let s = share(&Api::new(&a), &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        let ab = Api::new(&b);
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding")
            .await;
        let events = ab
            .client
            .get(format!("{}/api/v1/events", ab.base))
            .bearer_auth(&ab.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        assert_eq!(events.status(), StatusCode::OK);
        // Reads until the settings change made after the last action.
        let reader = tokio::spawn(read_events(events, |n, _| n == "settings"));
        let mut responses = Vec::new();
        for _ in 0..5 {
            let (code, t) = ab
                .post(&format!("/api/v1/transfers/{id}/pause"), json!({}))
                .await;
            assert_eq!(code, StatusCode::OK, "{t}");
            assert_eq!(t["state"], "completed");
            responses.push(t);
            let (code, t) = ab
                .post(&format!("/api/v1/transfers/{id}/resume"), json!({}))
                .await;
            assert_eq!(code, StatusCode::OK, "{t}");
            responses.push(t);
            ab.wait_transfer(&id, "seeding after resume", |t| t["state"] == "seeding")
                .await;
        }
        let (code, t) = ab
            .post(&format!("/api/v1/transfers/{id}/pause"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        responses.push(t);
        let (code, _) = ab
            .call(
                Method::PATCH,
                "/api/v1/settings",
                Some(json!({"upload_limit": 1000})),
            )
            .await;
        assert_eq!(code, StatusCode::OK);
        let seen = reader.await.unwrap();
        let mine: Vec<&Value> = seen
            .iter()
            .filter(|(n, v)| n == "transfer" && v["id"] == id.as_str())
            .map(|(_, v)| v)
            .collect();
        let revs: Vec<u64> = mine
            .iter()
            .map(|v| v["revision"].as_u64().unwrap())
            .collect();
        assert!(
            revs.windows(2).all(|w| w[0] < w[1]),
            "the event stream carries a transfer's views out of order: {revs:?}"
        );
        assert_eq!(mine.last().unwrap()["state"], "completed", "{mine:?}");
        // Every seeding view follows the queued view of its resume.
        for r in responses.iter().filter(|r| r["state"] == "queued") {
            let rv = r["revision"].as_u64().unwrap();
            assert!(
                mine.iter()
                    .any(|v| v["state"] == "seeding" && v["revision"].as_u64().unwrap() > rv),
                "no seeding event newer than the resume's answer {r}"
            );
        }
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

/// Polls `pred` on `GET path` until it holds (within 30 s); returns the value.
async fn wait_get(api: &Api, path: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, v) = api.get(path).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        if pred(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} never showed on {path}: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The sharer sees its uploads: while B downloads (A's upload limited to
/// 1 MiB/s), A's share lists B as a peer being served with its address, path
/// and a rate near the limit, the peer list shows B uploading that share, the
/// event stream carries the share's and the totals' changes, and at the end
/// the bytes sent are the file's (ratio 1) and the totals agree with
/// `/metrics`. All-time totals survive A's restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sharer_sees_who_it_serves_with_rates_bytes_and_ratio() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let adir = tmp.path().join("a");
        let limit = 1u64 << 20;
        let a = start_slow(&adir, limit).await;
        let b = start(&tmp.path().join("b")).await;
        let size = 4usize << 20;
        let src = random_file(tmp.path(), "served.bin", size);
        let aa = Api::new(&a);
        let ab = Api::new(&b);
        let s = share(&aa, &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        assert_eq!(s["uploaded_bytes"], 0, "{s}");
        assert_eq!(s["peers"], json!([]), "{s}");
        let events = aa
            .client
            .get(format!("{}/api/v1/events", aa.base))
            .bearer_auth(&aa.token)
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .unwrap();
        let idc = id.clone();
        let reader = tokio::spawn(read_events(events, move |n, v| {
            n == "share"
                && v["id"] == idc.as_str()
                && v["peers"].as_array().is_some_and(|p| !p.is_empty())
        }));
        let (_, st_b) = ab.get("/api/v1/status").await;
        let peer_b = st_b["peer_id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        // While it runs: B is served, at a rate near the limit.
        let shares = wait_get(&aa, "/api/v1/shares", "B being served at a rate", |v| {
            v[0]["peers"].as_array().is_some_and(|p| {
                p.iter().any(|p| {
                    p["peer_id"] == peer_b.as_str() && p["up_rate"].as_f64().unwrap() > 0.0
                })
            })
        })
        .await;
        let served = &shares[0]["peers"][0];
        assert_eq!(served["peer_id"], peer_b.as_str(), "{shares}");
        let addr = served["address"].as_str().expect("the address B came from");
        assert!(addr.contains("127.0.0.1"), "{served}");
        assert!(
            ["fast", "direct"].contains(&served["path"].as_str().unwrap()),
            "{served}"
        );
        let rate = shares[0]["up_rate"].as_f64().unwrap();
        assert!(
            rate > 0.0 && rate <= 1.5 * limit as f64,
            "a share's upload rate of {rate} B/s under a limit of {limit}"
        );
        let peers = wait_get(&aa, "/api/v1/peers", "B uploading the share", |v| {
            v.as_array().is_some_and(|ps| {
                ps.iter().any(|p| {
                    p["peer_id"] == peer_b.as_str()
                        && p["up_rate"].as_f64().unwrap() > 0.0
                        && p["shares"].as_array().unwrap().contains(&json!(id))
                })
            })
        })
        .await;
        assert!(!peers.as_array().unwrap().is_empty());
        let st = wait_get(&aa, "/api/v1/status", "a global upload rate", |v| {
            v["totals"]["up_rate"].as_f64().unwrap() > 0.0
        })
        .await;
        assert!(
            st["totals"]["uploaded_session"].as_u64().unwrap() > 0,
            "{st}"
        );
        let seen = reader.await.unwrap();
        assert!(
            seen.iter()
                .any(|(n, v)| n == "totals" && v["up_rate"].as_f64().unwrap() > 0.0),
            "no totals event with an upload rate before the share event: {seen:?}"
        );
        // At the end: the whole file was sent once; the share is idle again.
        ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding")
            .await;
        let shares = wait_get(
            &aa,
            "/api/v1/shares",
            "the share idle, every byte counted",
            |v| {
                v[0]["uploaded_bytes"].as_u64().unwrap() >= size as u64
                    && v[0]["up_rate"].as_f64().unwrap() == 0.0
            },
        )
        .await;
        let ratio = shares[0]["ratio"].as_f64().unwrap();
        assert!(
            (1.0..1.1).contains(&ratio),
            "ratio {ratio} for one copy sent: {shares}"
        );
        // The totals are /metrics' counters (taken each second: they agree
        // once a second passes without traffic).
        wait_get(&aa, "/api/v1/status", "no upload rate", |v| {
            v["totals"]["up_rate"].as_f64().unwrap() == 0.0
        })
        .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let counted = loop {
            let (_, st) = aa.get("/api/v1/status").await;
            let (_, metrics) = aa.raw("/metrics").await;
            let counted: u64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix("shoal_bytes_uploaded_total "))
                .expect("the upload counter in /metrics")
                .trim()
                .parse()
                .unwrap();
            if st["totals"]["uploaded_session"].as_u64() == Some(counted) {
                break counted;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the totals never agreed with /metrics: {st} vs {counted}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert!(counted >= size as u64);
        // All time survives a restart; the session starts from zero.
        a.shutdown().await;
        let a = start(&adir).await;
        let aa = Api::new(&a);
        let (_, st) = aa.get("/api/v1/status").await;
        assert_eq!(st["totals"]["uploaded_session"], 0, "{st}");
        assert!(
            st["totals"]["uploaded_all_time"].as_u64().unwrap() >= counted,
            "{st}"
        );
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// Cancel with `keep_data=true` forgets the transfer but leaves its partial
/// data: adding the same content to the same place again resumes from it
/// (it starts with the bytes it had) and completes with the right bytes. A
/// `keep_data` that is not a boolean is a 422 naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_can_keep_the_partial_data_and_a_new_transfer_resumes_from_it() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start_slow(&tmp.path().join("a"), 1 << 20).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let src = random_file(tmp.path(), "f.bin", 4 << 20);
        let s = share(&aa, &src).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let out = tmp.path().join("out");
        let add = json!({"ticket": s["ticket"], "output": out.to_str().unwrap()});
        let (code, _) = ab.post("/api/v1/transfers", add.clone()).await;
        assert_eq!(code, StatusCode::CREATED);
        ab.wait_transfer(&id, "partly done", |t| {
            t["done_bytes"].as_u64().unwrap_or(0) >= 1 << 20
        })
        .await;
        let part = out.join(format!("f.bin{}", shoal_store::partial::PART_SUFFIX));
        let (code, e) = ab
            .post(
                &format!("/api/v1/transfers/{id}/cancel?keep_data=maybe"),
                json!({}),
            )
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(e["error"]["field"], "keep_data", "{e}");
        let (code, _) = ab
            .post(
                &format!("/api/v1/transfers/{id}/cancel?keep_data=true"),
                json!({}),
            )
            .await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        assert!(part.exists(), "the partial data was deleted");
        let (code, _) = ab.get(&format!("/api/v1/transfers/{id}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        // Added again: it starts from what it had.
        let (code, t) = ab.post("/api/v1/transfers", add).await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        let first = ab
            .wait_transfer(&id, "its size known", |t| t["total_bytes"].is_u64())
            .await;
        assert!(
            first["done_bytes"].as_u64().unwrap() >= 1 << 20,
            "the new transfer started from scratch: {first}"
        );
        ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding")
            .await;
        assert_eq!(
            std::fs::read(out.join("f.bin")).unwrap(),
            std::fs::read(&src).unwrap()
        );
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

/// The folder browser lists folders (first) and files under its root only:
/// the root itself by default, a subfolder with its parent, and refuses a
/// path outside the root, also one reached through a symbolic link (403), a
/// relative path (422) and a missing one (404).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_folder_browser_stays_under_its_root() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("home");
        std::fs::create_dir_all(root.join("music/album")).unwrap();
        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        std::fs::write(root.join("music/song.mp3"), b"la").unwrap();
        let outside = tmp.path().join("secret");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let mut cfg = config(&tmp.path().join("d"));
        cfg.browse_root = Some(root.clone());
        let d = Daemon::start(cfg).await.unwrap();
        let api = Api::new(&d);
        let real_root = root.canonicalize().unwrap();
        let (code, v) = api.get("/api/v1/fs").await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["path"], real_root.to_str().unwrap());
        assert_eq!(
            v["parent"],
            Value::Null,
            "the root has no parent to go to: {v}"
        );
        let names: Vec<(&str, &str)> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["name"].as_str().unwrap(), e["kind"].as_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            [("escape", "dir"), ("music", "dir"), ("a.txt", "file")],
            "{v}"
        );
        let a = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "a.txt")
            .unwrap();
        assert_eq!(a["size"], 5);
        let music = real_root.join("music");
        let (code, v) = api
            .get(&format!("/api/v1/fs?path={}", music.to_str().unwrap()))
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert_eq!(v["parent"], real_root.to_str().unwrap());
        assert_eq!(v["entries"][0]["name"], "album");
        assert_eq!(
            v["entries"][1]["path"],
            music.join("song.mp3").to_str().unwrap()
        );
        for (path, code, what) in [
            (
                outside.to_str().unwrap().to_owned(),
                StatusCode::FORBIDDEN,
                "outside",
            ),
            (
                root.join("escape").to_str().unwrap().to_owned(),
                StatusCode::FORBIDDEN,
                "through a link",
            ),
            ("/".to_owned(), StatusCode::FORBIDDEN, "the machine's root"),
            (
                "relative/path".to_owned(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "relative",
            ),
            (
                root.join("nope").to_str().unwrap().to_owned(),
                StatusCode::NOT_FOUND,
                "missing",
            ),
            (
                root.join("a.txt").to_str().unwrap().to_owned(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "a file",
            ),
        ] {
            let (got, v) = api.get(&format!("/api/v1/fs?path={path}")).await;
            assert_eq!(got, code, "{what}: {v}");
            assert!(v["error"]["message"].is_string(), "{v}");
        }
        let (code, v) = api.get("/api/v1/fs?where=x").await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        d.shutdown().await;
    })
    .await;
}

/// A ticket's QR code is an SVG image; an empty or oversized text is a 422
/// naming `text`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qr_codes_of_tickets_are_svg_and_bounded() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let d = start(&tmp.path().join("d")).await;
        let api = Api::new(&d);
        let src = random_file(tmp.path(), "f.bin", 1000);
        let s = share(&api, &src).await;
        let resp = api
            .client
            // A ticket is URL-safe as it is (lowercase letters and digits).
            .get(format!(
                "{}/api/v1/qr?text={}",
                api.base,
                s["ticket"].as_str().unwrap()
            ))
            .bearer_auth(&api.token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "image/svg+xml");
        let svg = resp.text().await.unwrap();
        assert!(svg.contains("<svg") && svg.ends_with("</svg>"), "{svg}");
        for q in ["", "?text=", &format!("?text={}", "a".repeat(3000))] {
            let (code, v) = api.get(&format!("/api/v1/qr{q}")).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {v}");
            assert_eq!(v["error"]["field"], "text", "{v}");
        }
        d.shutdown().await;
    })
    .await;
}

/// The seed limits: a completed download stops seeding by itself once it
/// has sent `seed_ratio_limit` times its size (here to a third daemon that
/// can only get it from B), with a note saying why; seeding it again by hand
/// is not stopped by the limit; `seed_time_limit` stops one after that many
/// seconds of seeding; out-of-range limits are 422 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_limits_stop_seeding_at_a_ratio_or_after_a_time_unless_seeded_by_hand() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(&tmp.path().join("a")).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        for bad in [
            json!({"seed_ratio_limit": 0}),
            json!({"seed_ratio_limit": -1.5}),
            json!({"seed_ratio_limit": 1e9}),
            json!({"seed_time_limit": 0}),
        ] {
            let field = bad.as_object().unwrap().keys().next().unwrap().clone();
            let (code, e) = ab.call(Method::PATCH, "/api/v1/settings", Some(bad)).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
            assert_eq!(e["error"]["field"], field.as_str(), "{e}");
        }
        let (code, s) = ab
            .call(Method::PATCH, "/api/v1/settings", Some(json!({"seed_ratio_limit": 1.0})))
            .await;
        assert_eq!(code, StatusCode::OK, "{s}");
        assert_eq!(s["seed_ratio_limit"], 1.0);
        let src = random_file(tmp.path(), "f.bin", 1 << 20);
        let sh = share(&aa, &src).await;
        let id = sh["id"].as_str().unwrap().to_owned();
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": sh["ticket"], "output": tmp.path().join("out-b").to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        ab.wait_transfer(&id, "seeding", |t| t["state"] == "seeding").await;
        // A goes away: C can only get it from B, which then sends it whole.
        a.shutdown().await;
        let (_, st) = ab.get("/api/v1/status").await;
        let from_b = shoal_core::Ticket {
            id: id.parse().unwrap(),
            kind: shoal_core::Kind::File,
            providers: vec![shoal_core::Provider {
                peer: st["peer_id"].as_str().unwrap().parse().unwrap(),
                addrs: st["ticket_addresses"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap().parse().unwrap())
                    .collect(),
            }],
            capability: None,
            name: Some("f.bin".into()),
        };
        let c = start(&tmp.path().join("c")).await;
        let ac = Api::new(&c);
        let (code, t) = ac
            .post(
                "/api/v1/transfers",
                json!({"ticket": from_b.to_string(), "output": tmp.path().join("out-c").to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        ac.wait_transfer(&id, "downloaded from B", |t| t["state"] == "seeding")
            .await;
        let stopped = ab
            .wait_transfer(&id, "stopped by the ratio limit", |t| t["state"] == "completed")
            .await;
        assert!(stopped["ratio"].as_f64().unwrap() >= 1.0, "{stopped}");
        let note = stopped["note"].as_str().expect("a note saying why");
        assert!(note.contains("ratio"), "{note}");
        // By hand it seeds again, and the limit leaves it alone: the limit is
        // checked every 500 ms, so 2 s of seeding show it is not applied.
        let (code, t) = ab
            .post(&format!("/api/v1/transfers/{id}/resume"), json!({}))
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        ab.wait_transfer(&id, "seeding by hand", |t| t["state"] == "seeding" && t["note"].is_null())
            .await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let (_, t) = ab.get(&format!("/api/v1/transfers/{id}")).await;
        assert_eq!(t["state"], "seeding", "the ratio limit stopped a download seeded by hand: {t}");
        // A time limit: C (which has sent nothing) stops after 1 s of seeding.
        let (code, _) = ac
            .call(Method::PATCH, "/api/v1/settings", Some(json!({"seed_time_limit": 1})))
            .await;
        assert_eq!(code, StatusCode::OK);
        let t = ac
            .wait_transfer(&id, "stopped by the time limit", |t| t["state"] == "completed")
            .await;
        assert!(t["seeded_s"].as_u64().unwrap() >= 1, "{t}");
        assert!(t["note"].as_str().unwrap().contains("after"), "{t}");
        c.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

/// A folder's files, in the API: a folder share lists them (paged, in the
/// manifest's byte order, all here); a folder being downloaded lists them
/// with the bytes of each that are here, which only grow, show a file partly
/// here during the download, and end complete. A transfer carries a ticket
/// naming the downloader. Bad pages are 422, a file's list is 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folders_files_are_listed_with_what_of_each_is_here() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        // A serves at 1 MiB/s: the 2.8 MB folder takes about 3 s. "a/two"
        // is over MAX_WHOLE_FILE, so it arrives piece by piece (the others
        // whole, over the folder session).
        let a = start_slow(&tmp.path().join("a"), 1 << 20).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let folder = tmp.path().join("album");
        std::fs::create_dir_all(folder.join("a")).unwrap();
        random_file(&folder.join("a"), "one", 600_000);
        random_file(&folder.join("a"), "two", 1_500_000);
        random_file(&folder, "b", 700_000);
        let s = share(&aa, &folder).await;
        let id = s["id"].as_str().unwrap().to_owned();

        let (code, detail) = aa.get(&format!("/api/v1/shares/{id}")).await;
        assert_eq!(code, StatusCode::OK, "{detail}");
        assert_eq!((&detail["id"], &detail["ticket"]), (&s["id"], &s["ticket"]));
        let (code, l) = aa.get(&format!("/api/v1/shares/{id}/files")).await;
        assert_eq!(code, StatusCode::OK, "{l}");
        let paths: Vec<&str> = l["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["a/one", "a/two", "b"]);
        assert_eq!(
            (l["total_files"].as_u64(), l["total_bytes"].as_u64()),
            (Some(3), Some(2_800_000))
        );
        assert!(l["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["done_bytes"] == f["size"]));
        let (_, page) = aa
            .get(&format!("/api/v1/shares/{id}/files?offset=1&limit=1"))
            .await;
        assert_eq!(page["files"].as_array().unwrap().len(), 1, "{page}");
        assert_eq!(page["files"][0]["path"], "a/two");
        assert_eq!(page["offset"], 1);

        // Bad pages and lists of files.
        for q in ["limit=0", "limit=1001"] {
            let (code, e) = aa.get(&format!("/api/v1/shares/{id}/files?{q}")).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {e}");
            assert_eq!(error_field(&e), Some("limit"), "{e}");
        }
        let (code, e) = aa
            .get(&format!("/api/v1/shares/{id}/files?offset=-1"))
            .await;
        assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
        assert_eq!(error_field(&e), Some("offset"), "{e}");
        let single = share(&aa, &random_file(tmp.path(), "single.bin", 1000)).await;
        let (code, e) = aa
            .get(&format!(
                "/api/v1/shares/{}/files",
                single["id"].as_str().unwrap()
            ))
            .await;
        assert_eq!(code, StatusCode::CONFLICT, "{e}");
        let nobody = "ee".repeat(32);
        let (code, _) = aa.get(&format!("/api/v1/shares/{nobody}/files")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _) = aa.get(&format!("/api/v1/shares/{nobody}")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _) = ab.get(&format!("/api/v1/transfers/{nobody}/files")).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": nobody, "output": tmp.path().join("x").to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        let (code, e) = ab.get(&format!("/api/v1/transfers/{nobody}/files")).await;
        assert_eq!(code, StatusCode::CONFLICT, "{e}");

        // B lists the folder before downloading it: only its manifest.
        let ticket = s["ticket"].as_str().unwrap();
        let (code, l) = ab.get(&format!("/api/v1/ls?ticket={ticket}&limit=2")).await;
        assert_eq!(code, StatusCode::OK, "{l}");
        assert_eq!(
            (l["total_files"].as_u64(), l["total_bytes"].as_u64()),
            (Some(3), Some(2_800_000))
        );
        let listed: Vec<&str> = l["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        assert_eq!(listed, ["a/one", "a/two"], "{l}");
        assert!(
            !tmp.path().join("out").exists(),
            "listing created the output folder"
        );
        for (q, field) in [
            (String::new(), "ticket"),
            ("ticket=shoal1abc".to_owned(), "ticket"),
            (
                format!("ticket={}", single["ticket"].as_str().unwrap()),
                "ticket",
            ),
            (format!("ticket={ticket}&timeout_s=0"), "timeout_s"),
            (format!("ticket={ticket}&timeout_s=301"), "timeout_s"),
        ] {
            let (code, e) = ab.get(&format!("/api/v1/ls?{q}")).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{q}: {e}");
            assert_eq!(error_field(&e), Some(field), "{q}: {e}");
        }
        // A folder nobody serves: 404 after the timeout, saying so.
        let (code, e) = ab
            .get(&format!(
                "/api/v1/ls?ticket={}&timeout_s=1",
                "dd".repeat(32)
            ))
            .await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{e}");
        assert!(
            e["error"]["message"]
                .as_str()
                .unwrap()
                .contains("within 1 s"),
            "{e}"
        );

        // B downloads the folder; each file's bytes here only grow from one
        // list to the next, never past its size, and end complete.
        let out = tmp.path().join("out");
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap()}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let mut partial_seen = false;
        let mut last = [0u64; 3];
        loop {
            let (code, l) = ab.get(&format!("/api/v1/transfers/{id}/files")).await;
            assert_eq!(code, StatusCode::OK, "{l}");
            if l["known"] == true {
                let files = l["files"].as_array().unwrap();
                assert_eq!(files.len(), 3, "{l}");
                let mut complete = 0;
                for (i, f) in files.iter().enumerate() {
                    let d = f["done_bytes"].as_u64().unwrap();
                    let size = f["size"].as_u64().unwrap();
                    assert!(
                        d <= size && d >= last[i],
                        "file {i} went from {} to {d} bytes: {l}",
                        last[i]
                    );
                    last[i] = d;
                    partial_seen |= d > 0 && d < size;
                    complete += usize::from(d == size);
                }
                if complete == 3 {
                    break;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the folder never completed: {l}"
            );
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
        assert!(
            partial_seen,
            "no list showed a file partly here during a 3 s download"
        );
        let t = ab
            .wait_transfer(&id, "seeding (complete)", |t| t["state"] == "seeding")
            .await;
        let ticket: shoal_core::Ticket = t["ticket"]
            .as_str()
            .unwrap()
            .parse()
            .expect("a valid ticket");
        let (_, status) = ab.get("/api/v1/status").await;
        assert_eq!(ticket.id.to_hex(), id);
        assert_eq!(ticket.providers.len(), 1);
        assert_eq!(
            ticket.providers[0].peer.to_string(),
            status["peer_id"].as_str().unwrap()
        );
        assert!(ticket.capability.is_none());
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

/// A transfer of chosen files of a folder (`only`/`exclude`): only those are
/// fetched and created, its files list says which were chosen, the total is
/// theirs; bad choices are 422 naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_fetches_only_the_files_chosen() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start(&tmp.path().join("a")).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let folder = tmp.path().join("album");
        std::fs::create_dir_all(folder.join("a")).unwrap();
        random_file(&folder.join("a"), "one", 600_000);
        random_file(&folder.join("a"), "two", 900_000);
        random_file(&folder, "b", 700_000);
        let s = share(&aa, &folder).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let single = share(&aa, &random_file(tmp.path(), "single.bin", 1000)).await;
        let out = tmp.path().join("out");
        let o = out.to_str().unwrap();
        for (body, field) in [
            (
                json!({"ticket": s["ticket"], "output": o, "only": ["a/[x"]}),
                "only",
            ),
            (
                json!({"ticket": s["ticket"], "output": o, "exclude": [""]}),
                "exclude",
            ),
            (
                json!({"ticket": s["ticket"], "output": o, "only": vec!["*"; 65]}),
                "only",
            ),
            (
                json!({"ticket": single["ticket"], "output": o, "only": ["*"]}),
                "only",
            ),
        ] {
            let (code, e) = ab.post("/api/v1/transfers", body.clone()).await;
            assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {e}");
            assert_eq!(error_field(&e), Some(field), "{body}: {e}");
        }
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": o, "only": ["a/*"], "exclude": ["*two"]}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        assert_eq!(
            (&t["only"], &t["exclude"]),
            (&json!(["a/*"]), &json!(["*two"]))
        );
        let t = ab
            .wait_transfer(&id, "seeding (complete)", |t| t["state"] == "seeding")
            .await;
        assert_eq!(t["total_bytes"], 600_000, "{t}");
        let (_, l) = ab.get(&format!("/api/v1/transfers/{id}/files")).await;
        let rows: Vec<(&str, bool, u64)> = l["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap(),
                    f["chosen"].as_bool().unwrap(),
                    f["done_bytes"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("a/one", true, 600_000),
                ("a/two", false, 0),
                ("b", false, 0)
            ]
        );
        let name = s["name"].as_str().unwrap();
        assert_eq!(
            std::fs::read(out.join(name).join("a/one")).unwrap(),
            std::fs::read(folder.join("a/one")).unwrap()
        );
        assert!(!out.join(name).join("a/two").exists() && !out.join(name).join("b").exists());
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}

/// While a folder downloads from a slow seeder, one file not yet here is set
/// to skip and another to high through `PATCH /transfers/{id}/files`: the
/// high one is complete while most of the folder is still missing, the
/// skipped one is never created, and the transfer completes without it
/// (its total leaves it out). Bad requests are refused with the field named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_priority_changes_while_its_folder_downloads() {
    bounded(async {
        let tmp = tempfile::tempdir().unwrap();
        let a = start_slow(&tmp.path().join("a"), 2 << 20).await;
        let b = start(&tmp.path().join("b")).await;
        let (aa, ab) = (Api::new(&a), Api::new(&b));
        let folder = tmp.path().join("photos");
        std::fs::create_dir_all(&folder).unwrap();
        for i in 0..300 {
            random_file(&folder, &format!("p{i:03}.jpg"), 24_000 + i);
        }
        // And one file the folder sessions carry piece by piece (over 1 MiB).
        let part = 3u64 << 20;
        random_file(&folder, "m.mp4", part as usize);
        let s = share(&aa, &folder).await;
        let id = s["id"].as_str().unwrap().to_owned();
        let total: u64 = (0..300u64).map(|i| 24_000 + i).sum::<u64>() + part;
        let out = tmp.path().join("out");
        let (code, t) = ab
            .post(
                "/api/v1/transfers",
                json!({"ticket": s["ticket"], "output": out.to_str().unwrap(), "name": "photos"}),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{t}");
        ab.wait_transfer(&id, "some bytes in", |t| {
            t["done_bytes"].as_u64().unwrap_or(0) > 0
        })
        .await;
        let (code, l) = ab
            .get(&format!("/api/v1/transfers/{id}/files?limit=1000"))
            .await;
        assert_eq!(code, StatusCode::OK, "{l}");
        let missing: Vec<(String, u64)> = l["files"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["done_bytes"] == 0)
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_owned(),
                    f["size"].as_u64().unwrap(),
                )
            })
            .collect();
        assert!(missing.len() > 200, "the seeder was not slow enough: {l}");
        let (skip, skip_size) = missing[missing.len() / 2].clone();
        let (high, high_size) = missing[missing.len() - 1].clone();
        let route = format!("/api/v1/transfers/{id}/files");
        for (body, code, field) in [
            (
                json!({"paths": ["nope.jpg"], "priority": "high"}),
                422,
                Some("paths"),
            ),
            (json!({"paths": [], "priority": "high"}), 422, Some("paths")),
            (json!({"paths": [&high], "priority": "urgent"}), 422, None),
            (json!({"paths": [&high]}), 422, None),
            // The bounds: at most 1000 paths of at most 4096 bytes each.
            (
                json!({"paths": vec![&skip; 1001], "priority": "normal"}),
                422,
                Some("paths"),
            ),
            (
                json!({"paths": ["a".repeat(4097)], "priority": "normal"}),
                422,
                Some("paths"),
            ),
            (
                json!({"paths": vec![&skip; 1000], "priority": "normal"}),
                200,
                None,
            ),
        ] {
            let (c, e) = ab.call(Method::PATCH, &route, Some(body.clone())).await;
            assert_eq!(c.as_u16(), code, "{}: {e}", &body.to_string()[..200.min(body.to_string().len())]);
            if field.is_some() {
                assert_eq!(error_field(&e), field, "{e}");
            }
        }
        let (code, t) = ab
            .call(
                Method::PATCH,
                &route,
                Some(json!({"paths": [&skip], "priority": "skip"})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        // The running download applies it at once: its total leaves it out.
        ab.wait_transfer(&id, "the total without the skipped file", |t| {
            t["total_bytes"].as_u64() == Some(total - skip_size)
        })
        .await;
        let (code, t) = ab
            .call(
                Method::PATCH,
                &route,
                Some(json!({"paths": [&high], "priority": "high"})),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{t}");
        let done_at_high = t["done_bytes"].as_u64().unwrap();
        // The high file arrives while most of the folder is still missing.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let done_then = loop {
            let (_, l) = ab.get(&format!("{route}?limit=1000")).await;
            let row = l["files"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["path"] == high.as_str())
                .cloned()
                .unwrap();
            assert_eq!(row["priority"], "high", "{row}");
            if row["done_bytes"].as_u64() == Some(high_size) {
                let (_, t) = ab.get(&format!("/api/v1/transfers/{id}")).await;
                break t["done_bytes"].as_u64().unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the high file never arrived"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        // Measured from when it was set high: it came before most of what
        // was still missing then (its only rivals are the requests already
        // outstanding).
        let after = done_then.saturating_sub(done_at_high);
        let missing_then = total - skip_size - done_at_high;
        assert!(
            after < missing_then / 2,
            "the high file arrived only after {after} of the {missing_then} bytes missing when it was set high"
        );
        let t = ab
            .wait_transfer(&id, "seeding (complete)", |t| t["state"] == "seeding")
            .await;
        assert_eq!(t["total_bytes"].as_u64(), Some(total - skip_size), "{t}");
        let (_, l) = ab.get(&format!("{route}?limit=1000")).await;
        for f in l["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            let here = out.join("photos").join(path);
            if path == skip {
                assert_eq!(
                    (&f["priority"], &f["done_bytes"]),
                    (&json!("skip"), &json!(0)),
                    "{f}"
                );
                assert!(!here.exists(), "the skipped file was created");
            } else {
                assert_eq!(
                    std::fs::read(&here).unwrap(),
                    std::fs::read(folder.join(path)).unwrap(),
                    "{path}"
                );
                assert_eq!(f["done_bytes"], f["size"], "{f}");
            }
        }
        assert!(
            l["files"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f["path"] == "m.mp4" && f["done_bytes"] == part),
            "{l}"
        );
        b.shutdown().await;
        a.shutdown().await;
    })
    .await;
}
