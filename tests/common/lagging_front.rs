//! A front for one Matrix client's homeserver that can hold back what the client sends to devices, as
//! a slow or federated homeserver does: Megolm keys travel as to-device messages and may reach the bot
//! after the room event they unlock. While holding, the client is told its to-device messages were
//! sent; `release` delivers them, in order. Everything else passes straight through to Synapse.

use std::sync::{Arc, Mutex};

use axum::body::{Body, to_bytes};
use axum::http::{HeaderMap, Method, Request, Response, Uri};

struct Held {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone)]
struct Front {
    upstream: String,
    http: reqwest::Client,
    /// `Some` while holding.
    held: Arc<Mutex<Option<Vec<Held>>>>,
}

pub struct LaggingFront {
    pub url: String,
    front: Front,
}

impl LaggingFront {
    pub async fn start(upstream: &str) -> Self {
        let front = Front {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            held: Arc::new(Mutex::new(None)),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(front.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url, front }
    }

    /// From now on, to-device messages are held (and acknowledged) instead of sent.
    pub fn hold(&self) {
        *self.front.held.lock().unwrap() = Some(Vec::new());
    }

    /// Sends what was held and stops holding; returns how many requests were held.
    pub async fn release(&self) -> usize {
        let held = self.front.held.lock().unwrap().take().unwrap_or_default();
        for h in &held {
            let status = self.front.send(h).await.status();
            assert!(status.is_success(), "released to-device request refused: {status}");
        }
        held.len()
    }
}

impl Front {
    async fn send(&self, h: &Held) -> reqwest::Response {
        let path = h.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let mut request = self.http.request(h.method.clone(), format!("{}{path}", self.upstream));
        for (name, value) in &h.headers {
            if name != "host" && name != "content-length" {
                request = request.header(name, value);
            }
        }
        request.body(h.body.clone()).send().await.unwrap()
    }
}

async fn forward(axum::extract::State(front): axum::extract::State<Front>, request: Request<Body>) -> Response<Body> {
    let (parts, body) = request.into_parts();
    let held = Held {
        method: parts.method,
        uri: parts.uri,
        headers: parts.headers,
        body: to_bytes(body, usize::MAX).await.unwrap().to_vec(),
    };
    if held.uri.path().contains("/sendToDevice/") {
        let mut holding = front.held.lock().unwrap();
        if let Some(queue) = holding.as_mut() {
            queue.push(held);
            return Response::new(Body::from("{}"));
        }
    }
    let answer = front.send(&held).await;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    response.body(Body::from(answer.bytes().await.unwrap())).unwrap()
}
