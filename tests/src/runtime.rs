//! A tokio runtime owned by the harness, so its servers outlive any one test's runtime
//! and tests may be plain `#[test]` functions.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

pub fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("harness")
            .build()
            .expect("the harness runtime starts")
    })
}

/// Runs a future to completion on the harness runtime, from synchronous test code.
pub fn block_on<F: Future>(future: F) -> F::Output {
    runtime().block_on(future)
}

/// Binds a loopback listener on a free port, serving `router` on the harness runtime.
pub fn serve(router: axum::Router) -> std::net::SocketAddr {
    serve_on("127.0.0.1:0", router)
}

pub fn serve_on(address: &str, router: axum::Router) -> std::net::SocketAddr {
    let listener = block_on(tokio::net::TcpListener::bind(address))
        .unwrap_or_else(|e| panic!("binding {address}: {e}"));
    let local = listener.local_addr().expect("a bound address");
    runtime().spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    local
}

/// A server on the harness runtime that stops accepting when dropped.
pub struct Server {
    addr: std::net::SocketAddr,
    task: tokio::task::AbortHandle,
}

impl Server {
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `router` on a listener bound elsewhere (e.g. inside a network namespace).
pub fn serve_listener(listener: std::net::TcpListener, router: axum::Router) -> Server {
    let addr = listener.local_addr().expect("a bound address");
    let listener = {
        let _guard = runtime().enter();
        tokio::net::TcpListener::from_std(listener).expect("a non-blocking listener")
    };
    let task = runtime().spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Server {
        addr,
        task: task.abort_handle(),
    }
}

/// A plain HTTP client for the harness's own control calls.
pub fn control_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .expect("a client")
}
