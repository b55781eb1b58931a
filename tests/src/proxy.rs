//! A forward HTTP proxy (absolute-form requests, as clients send to an `http://` proxy)
//! that counts what passes through it, to prove which calls use the proxy.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::runtime::serve;

#[derive(Clone)]
pub struct ForwardProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    pub fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new().fallback(handle).with_state(seen.clone());
        Self {
            addr: serve(router),
            seen,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The absolute URLs requested through the proxy.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().expect("proxy lock").clone()
    }
}

async fn handle(State(seen): State<Arc<Mutex<Vec<String>>>>, request: Request) -> Response {
    let uri = request.uri().clone();
    if uri.scheme().is_none() {
        return (StatusCode::BAD_REQUEST, "proxy: expected an absolute URI").into_response();
    }
    seen.lock().expect("proxy lock").push(uri.to_string());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20)
        .await
        .unwrap_or_default();
    let client = crate::runtime::control_client();
    let mut forward = client.request(parts.method, uri.to_string());
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "proxy-connection" | "proxy-authorization" | "content-length"
        ) {
            forward = forward.header(name, value);
        }
    }
    match forward.body(body).send().await {
        Ok(upstream) => {
            let status = upstream.status();
            let headers = upstream.headers().clone();
            let bytes = upstream.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = status;
            for (name, value) in &headers {
                if name != "transfer-encoding" && name != "content-length" {
                    response.headers_mut().insert(name, value.clone());
                }
            }
            response
        }
        Err(e) => (StatusCode::BAD_GATEWAY, format!("proxy: {e}")).into_response(),
    }
}
