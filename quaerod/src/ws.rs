//! `/ws`: one connection per client, fed by its [`Outbox`]. The connection task only
//! moves what the outbox holds onto the socket; a client that does not read for
//! [`STUCK_AFTER`] is dropped, and meanwhile its pending messages merge in the outbox.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use quaero_shared::{ClientMessage, Hello, JobPath, ServerMessage};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, handshake::derive_accept_key};
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::aggregator::{Aggregator, OutMsg, Outbox};
use crate::api::ApiError;
use crate::http::{WsPlace, WsUpgrade};

type WebSocket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Buffers sized for our messages (a subscribe in, triggers of a few hundred bytes out):
/// tungstenite's defaults (128 KiB each way, the read one allocated up front) made each
/// idle client cost ~133 KB. The read buffer grows past this for a larger frame (up to
/// [`MAX_CLIENT_MESSAGE`]); writes are buffered up to 4 KiB between flushes.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(4 * 1024)
        .max_message_size(Some(MAX_CLIENT_MESSAGE))
        .max_frame_size(Some(MAX_CLIENT_MESSAGE))
}

pub const PING_EVERY: Duration = Duration::from_secs(30);
pub const STUCK_AFTER: Duration = Duration::from_secs(30);
/// Largest message a client may send; `subscribe` is tiny.
pub const MAX_CLIENT_MESSAGE: usize = 64 * 1024;

/// Whether an `Origin` header (if any) is this server itself. Browsers send it on every
/// WebSocket upgrade; tools usually do not. A page on another origin is refused.
fn origin_allowed(origin: Option<&str>, host: Option<&str>) -> bool {
    let Some(origin) = origin else { return true };
    let Some(host) = host else { return false };
    let o = origin.trim_start_matches("http://").trim_start_matches("https://");
    o.eq_ignore_ascii_case(host)
}

/// GET /ws: the WebSocket. The server sends `ServerMessage`s, the client may send
/// `ClientMessage`s (see docs/websocket.md).
#[utoipa::path(get, path = "/ws", tag = "daemon", security(("bearer" = []), ()),
    params(("token" = Option<String>, Query, description = "the token, for browsers (which cannot set headers here)")),
    responses((status = 101, description = "switched to the WebSocket protocol"),
        (status = 400, description = "not a WebSocket upgrade", body = quaero_shared::ErrorBody),
        (status = 401, body = quaero_shared::ErrorBody),
        (status = 403, description = "a foreign Origin", body = quaero_shared::ErrorBody)))]
pub fn route(
    agg: Arc<Aggregator>,
    token: Option<Arc<str>>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    crate::api::filters::endpoint0::<__path_route>()
        .and(same_origin())
        .and(crate::api::filters::auth_or_browser_token(token))
        .and(warp::header::optional::<String>("sec-websocket-protocol"))
        // Checks the upgrade's headers (the upgrade itself was taken out for us: `http`).
        .and(warp::ws())
        .and(warp::header::<String>("sec-websocket-key"))
        .and(warp::ext::optional::<WsUpgrade>())
        .map(move |proto: Option<String>, _: warp::ws::Ws, key: String, up: Option<WsUpgrade>| {
            let Some((on, place)) = up.as_ref().and_then(WsUpgrade::take) else {
                let body = quaero_shared::ErrorBody { error: "this connection cannot be upgraded".into() };
                return warp::reply::with_status(warp::reply::json(&body), StatusCode::INTERNAL_SERVER_ERROR)
                    .into_response();
            };
            let agg = agg.clone();
            tokio::spawn(async move {
                match on.await {
                    Ok(upgraded) => {
                        let socket =
                            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config()))
                                .await;
                        serve(socket, agg, place).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
                }
            });
            let mut res = warp::http::Response::new(warp::hyper::body::Bytes::new());
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = res.headers_mut();
            h.insert("connection", warp::http::HeaderValue::from_static("upgrade"));
            h.insert("upgrade", warp::http::HeaderValue::from_static("websocket"));
            if let Ok(v) = warp::http::HeaderValue::from_str(&derive_accept_key(key.trim().as_bytes())) {
                h.insert("sec-websocket-accept", v);
            }
            // Echo the first offered subprotocol, as browsers require when they offer one.
            if let Some(p) = proto.and_then(|p| p.split(',').next().map(|s| s.trim().to_string()))
                && let Ok(v) = warp::http::HeaderValue::from_str(&p)
                && !p.is_empty()
            {
                h.insert("sec-websocket-protocol", v);
            }
            res.into_response()
        })
}

/// Refuses an upgrade whose `Origin` is not this server (403): a page on another origin
/// cannot open a WebSocket to the daemon with the user's browser.
fn same_origin() -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("origin")
        .and(warp::header::optional::<String>("host"))
        .and_then(|origin: Option<String>, host: Option<String>| async move {
            if origin_allowed(origin.as_deref(), host.as_deref()) {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError {
                    status: StatusCode::FORBIDDEN,
                    message: "WebSocket upgrade from a foreign Origin refused".into(),
                }))
            }
        })
        .untuple_one()
}

fn encode(m: &OutMsg) -> Message {
    match m {
        OutMsg::Msg(m) => Message::text(serde_json::to_string(m).expect("message serialises")),
        OutMsg::Raw(s) => Message::text(s.as_ref()),
    }
}

async fn serve(socket: WebSocket, agg: Arc<Aggregator>, place: WsPlace) {
    let (id, outbox) = agg.register();
    let (mut tx, mut rx) = socket.split();
    let hello = ServerMessage::Hello(Hello {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: agg.mode.as_str().into(),
        time_threshold_ms: agg.threshold.as_millis() as u64,
    });
    let reader_outbox = outbox.clone();
    let mut reader = tokio::spawn(async move {
        while let Some(msg) = rx.next().await {
            let Ok(msg) = msg else { break };
            if msg.is_close() {
                break;
            }
            if let Message::Text(text) = &msg {
                handle_client_message(text.as_str(), &reader_outbox);
            } else if msg.is_binary() {
                reader_outbox.add_error("binary messages are not understood; send JSON text".into());
            }
        }
    });

    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut first = Some(vec![Message::text(serde_json::to_string(&hello).expect("hello"))]);
    loop {
        let batch: Vec<Message> = if let Some(f) = first.take() {
            f
        } else {
            tokio::select! {
                _ = outbox.notify.notified() => outbox.take().iter().map(encode).collect(),
                _ = ping.tick() => vec![Message::Ping(Default::default())],
                _ = &mut reader => break,
                _ = place.shed() => {
                    tracing::debug!(client = id, "WebSocket closed to make room (connection budget)");
                    break;
                }
            }
        };
        if batch.is_empty() {
            continue;
        }
        match tokio::time::timeout(STUCK_AFTER, send_all(&mut tx, batch)).await {
            Ok(Ok(())) => place.active(),
            Ok(Err(_)) => break,
            Err(_) => {
                tracing::info!(client = id, "dropping a WebSocket client that has not read for {STUCK_AFTER:?}");
                crate::metrics::METRICS.ws_clients_dropped.inc();
                break;
            }
        }
    }
    reader.abort();
    agg.unregister(id);
}

async fn send_all(
    tx: &mut futures_util::stream::SplitSink<WebSocket, Message>,
    msgs: Vec<Message>,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    for m in msgs {
        tx.feed(m).await?;
    }
    tx.flush().await
}

fn handle_client_message(text: &str, outbox: &Outbox) {
    match serde_json::from_str::<ClientMessage>(text) {
        Ok(ClientMessage::Subscribe { job_ids }) => {
            let mut set = HashSet::new();
            for id in &job_ids {
                match JobPath::parse(id) {
                    Some(p) => {
                        set.insert(p.manager);
                    }
                    None => {
                        outbox.add_error(format!("subscribe: {id:?} is not a job id"));
                        return;
                    }
                }
            }
            outbox.subscribe(set);
        }
        Err(e) => outbox.add_error(format!(
            "cannot understand {:?}: {e}; send {{\"type\":\"subscribe\",\"job_ids\":[...]}}",
            text.chars().take(100).collect::<String>()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert!(origin_allowed(None, Some("127.0.0.1:8080")));
        assert!(origin_allowed(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(!origin_allowed(Some("http://evil.example"), Some("127.0.0.1:8080")));
        assert!(!origin_allowed(Some("http://127.0.0.1:9999"), Some("127.0.0.1:8080")));
    }
}
