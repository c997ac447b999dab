//! The WebSocket link to `/ws`: connects, subscribes, and reconnects with backoff
//! (1 s doubling to 30 s). [`WsLink::next`] keeps all progress inside the link, so it is
//! cancel-safe and can sit in a `tokio::select!` next to other work.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::{ClientMessage, ServerMessage};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Stream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Connecting = Pin<Box<dyn Future<Output = Result<Stream, String>> + Send>>;

pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq)]
pub enum LinkEvent {
    Connected,
    Message(ServerMessage),
    /// The link is down; the next attempt starts at `retry_at`.
    Disconnected {
        retry_at: Instant,
        reason: String,
    },
}

enum State {
    Waiting(Pin<Box<Sleep>>),
    Connecting(Connecting),
    Open(Box<Stream>),
}

pub struct WsLink {
    url: String,
    token: Option<String>,
    /// Managers to subscribe to; empty means all.
    subscribe: Vec<String>,
    state: State,
    backoff: Duration,
}

impl WsLink {
    pub fn new(url: String, token: Option<String>, subscribe: Vec<String>) -> Self {
        Self {
            url,
            token,
            subscribe,
            state: State::Waiting(Box::pin(tokio::time::sleep(Duration::ZERO))),
            backoff: BACKOFF_MIN,
        }
    }

    pub async fn next(&mut self) -> LinkEvent {
        loop {
            match &mut self.state {
                State::Waiting(sleep) => {
                    sleep.as_mut().await;
                    let fut = connect(self.url.clone(), self.token.clone(), self.subscribe.clone());
                    self.state = State::Connecting(Box::pin(fut));
                }
                State::Connecting(fut) => match fut.as_mut().await {
                    Ok(stream) => {
                        self.state = State::Open(Box::new(stream));
                        self.backoff = BACKOFF_MIN;
                        return LinkEvent::Connected;
                    }
                    Err(reason) => return self.retry_later(reason),
                },
                State::Open(stream) => match stream.next().await {
                    Some(Ok(Message::Text(text))) => {
                        // Message types this client does not know are skipped, so a newer
                        // daemon does not break an older client.
                        if let Ok(msg) = serde_json::from_str::<ServerMessage>(text.as_str()) {
                            return LinkEvent::Message(msg);
                        }
                    }
                    Some(Ok(Message::Close(_))) | None => {
                        return self.retry_later("connection closed".into());
                    }
                    Some(Err(e)) => return self.retry_later(e.to_string()),
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    fn retry_later(&mut self, reason: String) -> LinkEvent {
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        let retry_at = Instant::now() + wait;
        self.state = State::Waiting(Box::pin(tokio::time::sleep_until(retry_at)));
        LinkEvent::Disconnected { retry_at, reason }
    }
}

async fn connect(url: String, token: Option<String>, subscribe: Vec<String>) -> Result<Stream, String> {
    let mut req = url.as_str().into_client_request().map_err(|e| e.to_string())?;
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}")).map_err(|e| e.to_string())?;
        req.headers_mut().insert("authorization", v);
    }
    let (mut stream, _) = tokio::time::timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(req))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| e.to_string())?;
    if !subscribe.is_empty() {
        let msg = ClientMessage::Subscribe { job_ids: subscribe };
        let text = serde_json::to_string(&msg).map_err(|e| e.to_string())?;
        stream.send(Message::text(text)).await.map_err(|e| e.to_string())?;
    }
    Ok(stream)
}
