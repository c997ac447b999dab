//! Security defaults, end to end against the real daemon (docs/rest-api.md, "Security checks"
//! and README "Security"): the bearer token on every `/api` route and `/ws`, the warning for a
//! non-loopback bind without one, what keeps a page on another origin out (JSON-only
//! mutations, no CORS, the WebSocket `Origin` check), validated definition ids, job ids
//! that cannot name files, and hostile event text that stays data and never reaches a
//! terminal through the tail.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use quaero_tests::{Api, Daemon, bin_path, emit_definition};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

const TOKEN: &str = "s3cret-T0ken_for-the-tests";

fn with_token(d: &Daemon) -> Api {
    Api::with_token(d, TOKEN)
}

/// A definition that runs for hours (one event a second) and costs nothing meanwhile.
fn forever_definition(id: &str) -> String {
    emit_definition(id, "count = 1000000\ninterval_ms = 1000")
}

/// One request with exactly these headers → (status, response headers, body).
async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = reqwest::Client::new().request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), url);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = resp.status().as_u16();
    let h = resp.headers().clone();
    (status, h, resp.text().await.unwrap_or_default())
}

/// Sends `raw` as is on a fresh connection (no client-side path normalisation) and reads
/// the whole answer → (status, everything the server sent).
async fn raw_http(port: u16, raw: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    // A connection the server keeps open (an accepted upgrade) ends the read after 3 s.
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status =
        text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("{raw:?} → {text:?}"));
    (status, text)
}

/// Tries a WebSocket upgrade with these extra headers: `Ok(echoed subprotocol)` once the
/// daemon's hello arrived, `Err(status)` when the upgrade was refused.
async fn ws_try(url: &str, headers: &[(&str, &str)]) -> Result<Option<String>, u16> {
    let mut req = url.into_client_request().expect("ws request");
    for (k, v) in headers {
        req.headers_mut().insert(HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
    }
    let res = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(req))
        .await
        .unwrap_or_else(|_| panic!("ws connect {url} {headers:?} timed out"));
    match res {
        Ok((mut ws, resp)) => {
            let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("hello within 10 s")
                .expect("a message")
                .expect("not an error");
            let v: Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
            assert_eq!(v["type"], "hello", "{v}");
            let proto = resp.headers().get("sec-websocket-protocol").map(|p| p.to_str().unwrap().to_string());
            Ok(proto)
        }
        Err(tungstenite::Error::Http(resp)) => Err(resp.status().as_u16()),
        Err(e) => panic!("ws connect {url} {headers:?}: {e}"),
    }
}

/// Names of the entries of a directory, recursively, relative to it.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())).flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(dir).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

/// Waits until the stats counters agree with the jobs' statuses (they follow the writer's
/// commits, a moment after a job starts).
async fn settle(api: &Api, running: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, st) = api.get("/api/jobs/stats").await;
        if st["pending_jobs"] == 0 && st["running_jobs"] == running {
            return;
        }
        assert!(Instant::now() < deadline, "stats did not settle: {st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Everything observable that an unauthorised or refused request could have changed.
async fn snapshot(api: &Api) -> Value {
    let (_, stats) = api.get("/api/jobs/stats").await;
    let (_, roots) = api.get("/api/jobs?limit=1000").await;
    let (_, defs) = api.get("/api/job-definitions").await;
    let jobs: Vec<Value> = roots["jobs"].as_array().unwrap().iter().map(|j| json!([j["id"], j["status"]])).collect();
    let mut def_ids: Vec<Value> = defs["job_definitions"].as_array().unwrap().iter().map(|d| d["id"].clone()).collect();
    def_ids.sort_by_key(|v| v.to_string());
    json!({ "stats": stats, "jobs": jobs, "definitions": def_ids })
}

#[tokio::test]
async fn every_api_route_needs_the_bearer_token_and_health_stays_open() {
    let d = Daemon::builder()
        .arg("--auth-token")
        .arg(TOKEN)
        .definition("q.toml", &emit_definition("quick", "count = 3"))
        .definition("f.toml", &forever_definition("forever"))
        .start();
    let api = with_token(&d);
    let done = api.execute("quick").await;
    assert_eq!(api.wait_terminal(&done, 30).await, "completed");
    let running = api.execute("forever").await;
    api.wait_status(&running, "running", 10).await;

    let new_def = json!({"id": "made-by-api", "steps": [{"name": "e", "type": "emit", "config": {"count": 1}}]});
    let new_def = new_def.to_string();
    // (method, path, body, status with the right token)
    let routes: Vec<(&str, String, &str, u16)> = vec![
        ("GET", "/api/jobs/stats".into(), "", 200),
        ("GET", "/api/jobs".into(), "", 200),
        ("GET", format!("/api/jobs?parent_id={done}"), "", 200),
        ("GET", format!("/api/jobs/{done}"), "", 200),
        ("GET", format!("/api/jobs/{done}/logs"), "", 200),
        ("GET", format!("/api/jobs/{done}-s1/logs?after=0"), "", 200),
        ("GET", "/api/job-definitions".into(), "", 200),
        ("GET", "/api/job-definitions/quick".into(), "", 200),
        ("GET", "/metrics".into(), "", 200),
        ("POST", "/api/job-definitions".into(), new_def.as_str(), 201),
        ("DELETE", "/api/job-definitions/made-by-api".into(), "", 200),
        ("POST", "/api/job-definitions/quick/execute".into(), "{}", 202),
        ("POST", format!("/api/jobs/{done}/rerun"), "{}", 201),
        ("POST", format!("/api/jobs/{running}/cancel"), "{}", 200),
        ("DELETE", format!("/api/jobs/{done}"), "", 200),
    ];
    let prefix = &TOKEN[..TOKEN.len() - 1];
    let bad_auth: Vec<Option<String>> = vec![
        None,
        Some("Bearer wrong".into()),
        Some("Bearer ".into()),
        Some("Bearer".into()),
        Some(format!("Bearer {prefix}")),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(TOKEN.into()),
        Some(format!("Token {TOKEN}")),
        Some(format!("Basic {TOKEN}")),
    ];
    settle(&api, 2).await;
    let before = snapshot(&api).await;
    let mut tried = 0;
    for (method, path, body, _) in &routes {
        for auth in &bad_auth {
            let mut h = vec![("content-type", "application/json")];
            if let Some(a) = auth {
                h.push(("authorization", a.as_str()));
            }
            let (s, _, b) = request(method, &d.url(path), &h, Some(body)).await;
            assert_eq!(s, 401, "{method} {path} with authorization {auth:?}: {b}");
            let err: Value = serde_json::from_str(&b).unwrap_or_else(|_| panic!("JSON error body: {b}"));
            assert!(err["error"].as_str().is_some_and(|e| !e.is_empty()), "{b}");
            assert!(!b.contains(TOKEN), "the token is never echoed: {b}");
            tried += 1;
        }
        // `?token=` is for browsers' WebSockets only; the REST API wants the header.
        let sep = if path.contains('?') { '&' } else { '?' };
        let (s, _, b) = request(
            method,
            &d.url(&format!("{path}{sep}token={TOKEN}")),
            &[("content-type", "application/json")],
            Some(body),
        )
        .await;
        assert_eq!(s, 401, "{method} {path} with ?token=: {b}");
    }
    assert_eq!(tried, routes.len() * bad_auth.len());
    // Nothing happened: no job started, cancelled, re-run or deleted, no definition added.
    assert_eq!(snapshot(&api).await, before, "an unauthorised request changed something");
    assert_eq!(api.status(&running).await, "running");

    // The health check stays open (docs/rest-api.md: `/api/health` needs no token) and says no more
    // than that the daemon is up, with or without a (wrong) token.
    for auth in [None, Some("Bearer wrong")] {
        let h: Vec<(&str, &str)> = auth.map(|a| vec![("authorization", a)]).unwrap_or_default();
        let (s, _, b) = request("GET", &d.url("/api/health"), &h, None).await;
        assert_eq!(s, 200, "{b}");
        let v: Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["status"], "ok");
        let keys: BTreeSet<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, BTreeSet::from(["status", "version"]), "{b}");
    }

    // With the right token every route does its job, in this order.
    for (method, path, body, ok) in &routes {
        let h = [("content-type", "application/json"), ("authorization", &format!("Bearer {TOKEN}"))];
        let (s, _, b) = request(method, &d.url(path), &h, Some(body)).await;
        assert_eq!(s, *ok, "{method} {path} with the token: {b}");
    }
    assert_eq!(api.wait_terminal(&running, 10).await, "cancelled");
    assert_eq!(api.get(&format!("/api/jobs/{done}")).await.0, 404, "deleted with the token");
}

#[tokio::test]
async fn websocket_takes_the_token_three_ways_and_nothing_else() {
    let d = Daemon::builder().arg("--auth-token").arg(TOKEN).start();
    let ws = d.ws_url();
    let bearer = format!("Bearer {TOKEN}");
    let proto = format!("bearer.{TOKEN}");
    let with_query = format!("{ws}?token={TOKEN}");

    // Refused: nothing, or anything but the token.
    assert_eq!(ws_try(&ws, &[]).await, Err(401));
    assert_eq!(ws_try(&ws, &[("authorization", "Bearer wrong")]).await, Err(401));
    assert_eq!(ws_try(&ws, &[("authorization", &format!("Bearer {TOKEN}x"))]).await, Err(401));
    assert_eq!(ws_try(&ws, &[("sec-websocket-protocol", "bearer.wrong")]).await, Err(401));
    assert_eq!(ws_try(&ws, &[("sec-websocket-protocol", &format!("bearer.{}", &TOKEN[1..]))]).await, Err(401));
    assert_eq!(ws_try(&format!("{ws}?token=wrong"), &[]).await, Err(401));
    assert_eq!(ws_try(&format!("{ws}?token="), &[]).await, Err(401));
    assert_eq!(ws_try(&format!("{ws}?tok={TOKEN}"), &[]).await, Err(401));

    // Accepted: the header, the subprotocol (prefixed or bare; echoed, as browsers
    // require), the query parameter.
    assert_eq!(ws_try(&ws, &[("authorization", &bearer)]).await, Ok(None));
    assert_eq!(ws_try(&ws, &[("sec-websocket-protocol", &proto)]).await, Ok(Some(proto.clone())));
    assert_eq!(ws_try(&ws, &[("sec-websocket-protocol", TOKEN)]).await, Ok(Some(TOKEN.to_string())));
    assert_eq!(ws_try(&with_query, &[]).await, Ok(None));

    // The token does not get past the Origin check: a page elsewhere is refused anyway.
    assert_eq!(ws_try(&with_query, &[("origin", "http://evil.example")]).await, Err(403));
    assert_eq!(ws_try(&ws, &[("authorization", &bearer), ("origin", "http://evil.example")]).await, Err(403));
    let own = format!("http://127.0.0.1:{}", d.port);
    assert_eq!(ws_try(&with_query, &[("origin", &own)]).await, Ok(None));
}

#[tokio::test]
async fn websocket_upgrades_from_a_foreign_origin_are_refused() {
    // The default configuration (no token) is where the Origin check is the only guard.
    let d = Daemon::start();
    let ws = d.ws_url();
    let port = d.port;
    for origin in [
        "http://evil.example".to_string(),
        format!("http://evil.example:{port}"),
        format!("http://127.0.0.1:{port}.evil.example"),
        format!("http://127.0.0.1:{}", port.wrapping_add(1).max(1)),
        "null".to_string(),
        "file://".to_string(),
    ] {
        assert_eq!(ws_try(&ws, &[("origin", &origin)]).await, Err(403), "Origin: {origin}");
    }
    // The daemon's own origin (the dashboard) and tools that send no Origin get in.
    assert_eq!(ws_try(&ws, &[("origin", &format!("http://127.0.0.1:{port}"))]).await, Ok(None));
    assert_eq!(ws_try(&ws, &[]).await, Ok(None));
}

#[tokio::test]
async fn a_dns_rebinding_page_cannot_use_the_daemon() {
    // After DNS rebinding, evil.example resolves to 127.0.0.1: the browser then treats the
    // daemon as same-origin with the attacker's page and sends `Host: evil.example:PORT`
    // (and that Origin). Only a Host check can tell the two apart.
    let d = Daemon::builder().definition("q.toml", &emit_definition("quick", "count = 1")).start();
    let api = Api::new(&d);
    let before = snapshot(&api).await;
    let host = format!("evil.example:{}", d.port);
    let (s, text) = raw_http(
        d.port,
        &format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        ),
    )
    .await;
    assert_ne!(s, 101, "WebSocket upgrade for Host {host}: {text}");
    let (s, text) = raw_http(
        d.port,
        &format!(
            "POST /api/job-definitions/quick/execute HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        ),
    )
    .await;
    assert!(s == 400 || s == 403 || s == 421, "execute for Host {host}: {text}");
    assert_eq!(snapshot(&api).await, before);
}

#[test]
fn a_non_loopback_bind_without_a_token_warns_loudly() {
    let has_warning = |d: &Daemon| d.output_text().lines().any(|l| l.contains("WARNING") && l.contains("0.0.0.0"));

    let d = Daemon::builder().arg("--host").arg("0.0.0.0").start();
    // stdout (the start line) and stderr (the warning) are read by separate threads.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !has_warning(&d) {
        assert!(Instant::now() < deadline, "no warning for 0.0.0.0 without a token; output:\n{}", d.output_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = d.output_text();
    assert!(out.contains("auth token") || out.contains("auth_token"), "the warning says what to do:\n{out}");
    drop(d);

    // With a token, or on loopback, there is nothing to warn about.
    for d in [Daemon::builder().arg("--host").arg("0.0.0.0").arg("--auth-token").arg(TOKEN).start(), Daemon::start()] {
        std::thread::sleep(Duration::from_millis(500));
        let out = d.output_text();
        assert!(!out.contains("WARNING"), "unexpected warning:\n{out}");
        assert!(out.contains("listening on"), "{out}");
    }
}

#[tokio::test]
async fn mutations_need_a_json_content_type_and_refused_ones_change_nothing() {
    let d = Daemon::builder()
        .definition("q.toml", &emit_definition("quick", "count = 3"))
        .definition("f.toml", &forever_definition("forever"))
        .start();
    let api = Api::new(&d);
    let done = api.execute("quick").await;
    assert_eq!(api.wait_terminal(&done, 30).await, "completed");
    let running = api.execute("forever").await;
    let (s, _) = api
        .post("/api/job-definitions", json!({"id": "by-api", "steps": [{"name": "e", "type": "emit", "config": {}}]}))
        .await;
    assert_eq!(s, 201);
    let new_def = json!({"id": "by-form", "steps": [{"name": "e", "type": "emit", "config": {}}]}).to_string();

    // Everything a page on another origin can send without a CORS preflight (a form, a
    // `fetch` with a "simple" Content-Type, or none), and near misses of the JSON type.
    let bad_types: [Option<&str>; 9] = [
        None,
        Some("text/plain"),
        Some("text/plain; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=xyz"),
        Some("text/plain; charset=application/json"),
        Some("application/jsonx"),
        Some("application/json-seq"),
        Some("text/json"),
    ];
    let routes: Vec<(&str, String, &str)> = vec![
        ("POST", "/api/job-definitions/quick/execute".into(), "{}"),
        ("POST", format!("/api/jobs/{running}/cancel"), "{}"),
        ("POST", format!("/api/jobs/{done}/rerun"), "{}"),
        ("POST", "/api/job-definitions".into(), new_def.as_str()),
        ("DELETE", format!("/api/jobs/{done}"), ""),
        ("DELETE", "/api/job-definitions/by-api".into(), ""),
    ];
    settle(&api, 2).await;
    let before = snapshot(&api).await;
    for (method, path, body) in &routes {
        for ct in bad_types {
            let h: Vec<(&str, &str)> = ct.map(|c| vec![("content-type", c)]).unwrap_or_default();
            let (s, headers, b) = request(method, &d.url(path), &h, Some(body)).await;
            assert_eq!(s, 415, "{method} {path} with Content-Type {ct:?}: {b}");
            assert!(b.contains("application/json"), "the error says what is needed: {b}");
            assert!(headers.get("access-control-allow-origin").is_none());
        }
    }
    assert_eq!(snapshot(&api).await, before, "a refused request changed something");
    assert_eq!(api.status(&running).await, "running");

    // The JSON type (with parameters, any case) works.
    let (s, _, b) = request(
        "POST",
        &d.url("/api/job-definitions/quick/execute"),
        &[("content-type", "Application/JSON; charset=utf-8")],
        Some("{}"),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (s, _, b) =
        request("POST", &d.url(&format!("/api/jobs/{running}/cancel")), &[("content-type", "application/json")], None)
            .await;
    assert_eq!(s, 200, "{b}");

    // With a token configured the order is: who you are first, then what you sent.
    let d2 = Daemon::builder().arg("--auth-token").arg(TOKEN).definition("q.toml", &emit_definition("q", "")).start();
    let url = d2.url("/api/job-definitions/q/execute");
    let bearer = format!("Bearer {TOKEN}");
    let (s, _, _) = request("POST", &url, &[("content-type", "text/plain")], Some("{}")).await;
    assert_eq!(s, 401);
    let (s, _, _) =
        request("POST", &url, &[("content-type", "text/plain"), ("authorization", &bearer)], Some("{}")).await;
    assert_eq!(s, 415);
    assert_eq!(with_token(&d2).get("/api/jobs/stats").await.1["total_jobs"], 0);
}

#[tokio::test]
async fn no_cors_headers_anywhere_and_preflights_grant_nothing() {
    let d = Daemon::builder().definition("q.toml", &emit_definition("quick", "count = 3")).start();
    let api = Api::new(&d);
    let m = api.execute("quick").await;
    api.wait_terminal(&m, 30).await;
    let evil = [("origin", "http://evil.example")];
    let evil_json = [("origin", "http://evil.example"), ("content-type", "application/json")];
    let no_cors = |what: &str, h: &reqwest::header::HeaderMap| {
        let acx: Vec<String> =
            h.keys().map(|k| k.as_str().to_string()).filter(|k| k.starts_with("access-control-")).collect();
        assert!(acx.is_empty(), "{what}: CORS headers {acx:?}");
        assert!(h.get("vary").is_none_or(|v| !v.to_str().unwrap().to_ascii_lowercase().contains("origin")));
    };
    let mut answers = Vec::new();
    for path in [
        "/api/health".to_string(),
        "/api/jobs".to_string(),
        "/api/jobs/stats".to_string(),
        format!("/api/jobs/{m}"),
        format!("/api/jobs/{m}/logs"),
        "/api/job-definitions".to_string(),
        "/api/jobs/m999".to_string(),
        "/api/jobs?status=bogus".to_string(),
        "/metrics".to_string(),
        "/queue".to_string(),
        "/nope".to_string(),
    ] {
        let (s, h, _) = request("GET", &d.url(&path), &evil, None).await;
        no_cors(&format!("GET {path} → {s}"), &h);
        answers.push(s);
    }
    assert!(answers.contains(&200) && answers.contains(&404) && answers.contains(&400), "{answers:?}");
    for (method, path, h) in [
        ("POST", "/api/job-definitions/quick/execute", &evil[..]),
        ("POST", "/api/job-definitions/quick/execute", &evil_json[..]),
        ("POST", "/api/job-definitions", &evil_json[..]),
        ("DELETE", "/api/jobs/m999", &evil_json[..]),
    ] {
        let (s, h, body) = request(method, &d.url(path), h, Some("{}")).await;
        no_cors(&format!("{method} {path} → {s}"), &h);
        if s == 202 {
            // The JSON POST started a job: let it end, so the count below is settled.
            let started: Value = serde_json::from_str(&body).unwrap();
            api.wait_terminal(started["job_id"].as_str().unwrap(), 30).await;
        }
    }

    // A browser asks before a cross-origin JSON POST or a DELETE; the answer must not
    // allow it (no Access-Control-Allow-* and not a success).
    for (path, method) in [
        ("/api/job-definitions/quick/execute", "POST"),
        ("/api/job-definitions", "POST"),
        (&*format!("/api/jobs/{m}"), "DELETE"),
        (&*format!("/api/jobs/{m}/cancel"), "POST"),
        ("/api/jobs", "GET"),
        ("/ws", "GET"),
    ] {
        let (s, h, _) = request(
            "OPTIONS",
            &d.url(path),
            &[
                ("origin", "http://evil.example"),
                ("access-control-request-method", method),
                ("access-control-request-headers", "content-type, authorization"),
            ],
            None,
        )
        .await;
        no_cors(&format!("OPTIONS {path} → {s}"), &h);
        assert!(!(200..300).contains(&s), "preflight for {method} {path} answered {s}");
    }
    // Only the two jobs we started ran: ours, and the JSON POST above, which a browser
    // could only send after a preflight that it does not get.
    assert_eq!(api.get("/api/jobs/stats").await.1["total_jobs"], 4);
}

#[tokio::test]
async fn definition_ids_are_validated_and_no_path_leaves_the_daemon_dirs() {
    let d = Daemon::builder().definition("quick.toml", &emit_definition("quick", "count = 1")).start();
    let api = Api::new(&d);
    let root = d.data_dir.parent().unwrap().to_path_buf();
    let outside = root.parent().unwrap().to_path_buf();
    let uniq = format!("quaero-sec-{}", std::process::id());
    let defs_before = tree(&d.definitions_dir);
    let root_before: BTreeSet<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(root_before, BTreeSet::from(["data".to_string(), "jobs".to_string()]));

    let step = json!([{"name": "e", "type": "emit", "config": {"count": 1}}]);
    let bad_ids = [
        format!("../{uniq}"),
        format!("../../{uniq}"),
        format!("/tmp/{uniq}"),
        "A".to_string(),
        "Quick".to_string(),
        "a/b".to_string(),
        "a\\b".to_string(),
        "..".to_string(),
        ".".to_string(),
        "".to_string(),
        "a.toml".to_string(),
        "a b".to_string(),
        "a\0b".to_string(),
        "a\nb".to_string(),
        "é".to_string(),
        "a".repeat(65),
        "x".repeat(100_000),
    ];
    for id in &bad_ids {
        let (s, b) = api.post("/api/job-definitions", json!({"id": id, "name": "n", "steps": step})).await;
        let shown: String = id.chars().take(40).collect();
        assert_eq!(s, 400, "id {shown:?}: {b}");
        assert!(b["error"].as_str().unwrap().starts_with("id:"), "id {shown:?}: {b}");
    }
    // The longest valid id is accepted (the boundary of the cap above).
    let (s, b) = api.post("/api/job-definitions", json!({"id": "a".repeat(64), "steps": step})).await;
    assert_eq!(s, 201, "{b}");

    // Sizes are capped too.
    let (s, b) =
        api.post("/api/job-definitions", json!({"id": "big-name", "name": "n".repeat(201), "steps": step})).await;
    assert_eq!(s, 400, "{b}");
    let many: Vec<Value> = (0..101).map(|i| json!({"name": format!("s{i}"), "type": "emit", "config": {}})).collect();
    let (s, b) = api.post("/api/job-definitions", json!({"id": "many-steps", "steps": many})).await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = api
        .post(
            "/api/job-definitions",
            json!({"id": "big-msg", "steps": [{"name": "e", "type": "emit", "config": {"message": "m".repeat(70_000)}}]}),
        )
        .await;
    assert_eq!(s, 400, "{b}");
    let huge = json!({"id": "huge", "description": "d".repeat(1_100_000), "steps": step}).to_string();
    let (s, _, _) =
        request("POST", &d.url("/api/job-definitions"), &[("content-type", "application/json")], Some(&huge)).await;
    assert_eq!(s, 413);

    // Ids in the path: looked up, never turned into a file name.
    for id in [format!("..%2F..%2F{uniq}"), "..%2Fjobs%2Fquick".into(), "quick.toml".into(), "%2Fetc%2Fpasswd".into()] {
        assert_eq!(api.get(&format!("/api/job-definitions/{id}")).await.0, 404, "GET {id}");
        assert_eq!(api.delete(&format!("/api/job-definitions/{id}")).await.0, 404, "DELETE {id}");
        assert_eq!(api.post(&format!("/api/job-definitions/{id}/execute"), json!({})).await.0, 404, "execute {id}");
    }
    // A file definition cannot be deleted over the API.
    assert_eq!(api.delete("/api/job-definitions/quick").await.0, 409);
    assert!(d.definitions_dir.join("quick.toml").exists());

    // Only the valid ones exist, and nothing was written outside the data dir: the
    // definitions dir is as we made it, nothing new beside the two dirs or above them.
    let (_, defs) = api.get("/api/job-definitions").await;
    let ids: BTreeSet<&str> =
        defs["job_definitions"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    let long = "a".repeat(64);
    assert_eq!(ids, BTreeSet::from(["quick", long.as_str()]));
    assert_eq!(tree(&d.definitions_dir), defs_before);
    let root_after: BTreeSet<String> =
        std::fs::read_dir(&root).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(root_after, root_before);
    assert!(!outside.join(&uniq).exists());
    assert!(!Path::new("/tmp").join(&uniq).exists());
    for name in tree(&d.data_dir) {
        assert!(!name.contains(&uniq) && !name.contains("passwd"), "unexpected file in the data dir: {name}");
    }
}

#[tokio::test]
async fn job_ids_and_asset_paths_cannot_name_files() {
    let d = Daemon::builder().definition("q.toml", &emit_definition("quick", "count = 2")).start();
    let api = Api::new(&d);
    let m = api.execute("quick").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let leaked = |body: &str| body.contains("root:") || body.contains("[package]") || body.contains("[workspace]");

    // Encoded traversal survives the client, so the daemon sees `..%2F`.
    for path in [
        "/api/jobs/..%2F..%2Fetc/logs".to_string(),
        "/api/jobs/..%2F..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "/api/jobs/..%2F..%2F..%2F..%2Fetc%2Fpasswd/logs".to_string(),
        "/api/jobs/%2Fetc%2Fpasswd/logs".to_string(),
        format!("/api/jobs/{m}%2F..%2F..%2Fetc%2Fpasswd/logs"),
        format!("/api/jobs/{m}-s1%00/logs"),
        "/api/jobs?parent_id=..%2F..%2Fetc%2Fpasswd".to_string(),
        "/assets/..%2F..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        "/assets/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd".to_string(),
        "/assets/..%2F..%2FCargo.toml".to_string(),
        "/assets/%2Fetc%2Fpasswd".to_string(),
    ] {
        let (s, _, b) = request("GET", &d.url(&path), &[], None).await;
        assert!(s == 404 || s == 400 || (path.starts_with("/api/jobs?") && s == 200), "GET {path} → {s}: {b}");
        assert!(!leaked(&b), "GET {path} returned a file: {b}");
        if path.starts_with("/api/jobs?") {
            let v: Value = serde_json::from_str(&b).unwrap();
            assert!(s != 200 || v["total_count"] == 0, "{b}");
        }
    }
    // Unnormalised dots, straight onto the socket.
    for target in [
        "/api/jobs/../../etc/passwd".to_string(),
        "/api/jobs/../../../../etc/passwd/logs".to_string(),
        format!("/api/jobs/{m}/../../../../etc/passwd"),
        "/assets/../../../../etc/passwd".to_string(),
        "/assets/../Cargo.toml".to_string(),
        "/assets/./../../Cargo.toml".to_string(),
        "/queue/../../../../etc/passwd".to_string(),
    ] {
        let (s, text) =
            raw_http(d.port, &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")).await;
        assert!(s == 404 || s == 400, "GET {target} → {s}: {text}");
        assert!(!leaked(&text), "GET {target} returned a file: {text}");
    }
    // Mutations with such ids find nothing and delete nothing.
    for id in ["..%2F..%2Fdata", "..%2Fjobs", "%2E%2E"] {
        assert_eq!(api.delete(&format!("/api/jobs/{id}")).await.0, 404, "DELETE {id}");
        assert_eq!(api.post(&format!("/api/jobs/{id}/cancel"), json!({})).await.0, 404, "cancel {id}");
        assert_eq!(api.post(&format!("/api/jobs/{id}/rerun"), json!({})).await.0, 404, "rerun {id}");
    }
    assert!(d.data_dir.is_dir() && d.definitions_dir.join("q.toml").exists());
    assert_eq!(api.status(&m).await, "completed");
}

/// Event text with markup and terminal control sequences: OSC 52 (sets the clipboard),
/// ED (clears the screen), an 8-bit CSI, a DCS string, BEL.
const HOSTILE: &str = "<script>alert('x')</script><img src=x onerror=alert(1)> \u{1b}]52;c;ZXZpbA==\u{7} \
                       \u{1b}[2J \u{9b}2J \u{1b}Pq#0\u{1b}\\ \u{7}bell {i}";

#[tokio::test]
async fn hostile_event_text_is_data_in_the_api_and_never_reaches_the_terminal() {
    let d = Daemon::builder().arg("--auth-token").arg(TOKEN).start();
    let api = with_token(&d);
    let printf = r"printf '\033]52;c;ZXZpbA==\007 <b>bold</b> \033[2J\033[31mred\n'";
    let def = json!({
        "id": "hostile",
        "name": "<i>hostile</i>\u{1b}[2J",
        "steps": [
            {"name": "emit\u{1b}]0;title\u{7}", "type": "emit", "config": {"count": 3, "message": HOSTILE, "level": "warn"}},
            {"name": "printf", "type": "command", "config": {"run": printf}},
        ]
    });
    let (s, b) = api.post("/api/job-definitions", def).await;
    assert_eq!(s, 201, "{b}");
    let m = api.execute("hostile").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");

    // The API hands the text back exactly, as JSON strings in a JSON response.
    let r = reqwest::Client::new()
        .get(d.url(&format!("/api/jobs/{m}/logs?limit=1000")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let ct = r.headers().get("content-type").unwrap().to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "{ct}");
    let raw = r.text().await.unwrap();
    assert!(
        !raw.contains('\u{1b}') && !raw.contains('\u{7}') && !raw.contains('\u{9b}'),
        "JSON escapes control characters, C1 (the 8-bit CSI) included"
    );
    let events = api.all_events(&m, 1000).await;
    let messages: Vec<&str> = events.iter().map(|e| e["message"].as_str().unwrap()).collect();
    for i in 1..=3 {
        let expected = HOSTILE.replace("{i}", &i.to_string());
        assert!(messages.contains(&expected.as_str()), "event {i} changed: {messages:?}");
    }
    assert!(messages.contains(&"\u{1b}]52;c;ZXZpbA==\u{7} <b>bold</b> \u{1b}[2J\u{1b}[31mred"), "{messages:?}");
    assert!(events.iter().any(|e| e["step_name"] == "emit\u{1b}]0;title\u{7}"));

    // The tail prints it as text: no ESC, no BEL, no 8-bit CSI; --json escapes ESC and BEL.
    // `c1`: also refuse the 8-bit CSI (U+009B as UTF-8). Plain lines strip it; `--json`
    // escapes it (`\u009b`) as it does C0 controls.
    let run = |extra: &[&str], c1: bool| {
        let out = Command::new(bin_path("quaero-tui"))
            .args(["--server", &d.base, "--token", TOKEN, "--job", &m, "--no-follow"])
            .args(extra)
            .env_remove("NO_COLOR")
            .stdin(Stdio::null())
            .output()
            .expect("run quaero-tui");
        assert!(out.status.success(), "quaero-tui {extra:?}: {out:?}");
        for (name, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            let bad: Vec<usize> = bytes
                .iter()
                .enumerate()
                .filter(|&(i, &b)| b == 0x1b || b == 0x07 || (c1 && b == 0x9b && i > 0 && bytes[i - 1] == 0xc2))
                .map(|(i, _)| i)
                .collect();
            assert!(
                bad.is_empty(),
                "quaero-tui {extra:?} {name} has control bytes at {bad:?}: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        String::from_utf8(out.stdout).expect("UTF-8 output")
    };
    let plain = run(&[], true);
    assert_eq!(plain.matches("<script>alert('x')</script>").count(), 3, "the text is shown, as text:\n{plain}");
    assert!(plain.contains("bell 3") && plain.contains("<b>bold</b> red"), "{plain}");
    let plain_tail = run(&["--tail", "2"], true);
    assert!(plain_tail.lines().count() >= 1);
    // --json keeps the data exact (escaped inside JSON strings).
    let json_out = run(&["--json"], true);
    let parsed: Vec<Value> = json_out.lines().map(|l| serde_json::from_str(l).expect("JSON line")).collect();
    assert!(parsed.iter().any(|e| e["message"] == HOSTILE.replace("{i}", "2")), "{json_out}");
}

/// A command gets its job id and the data directory's marker, never the daemon's token,
/// even when the daemon took the token from its environment.
#[tokio::test]
async fn commands_see_their_job_id_and_not_the_daemons_token() {
    let def = "id = \"env\"\n[[steps]]\nname = \"c\"\ntype = \"command\"\n[steps.config]\n\
               run = \"echo job=$QUAERO_JOB_ID token=${QUAERO_SERVER_AUTH_TOKEN:-none} marked=${QUAERO_INSTANCE:+yes}\"\n";
    let d = Daemon::builder().env("QUAERO_SERVER_AUTH_TOKEN", TOKEN).definition("env.toml", def).start();
    let api = with_token(&d);
    let m = api.execute("env").await;
    assert_eq!(api.wait_terminal(&m, 30).await, "completed");
    let events = api.all_events(&format!("{m}-s1"), 100).await;
    let line = format!("job={m}-s1 token=none marked=yes");
    assert!(events.iter().any(|e| e["message"] == line.as_str()), "{line:?} not in {events:?}");
}
