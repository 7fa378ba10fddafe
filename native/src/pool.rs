//! Keep-alive HTTP/1.1 connections to backends: [`Pool`].
//!
//! A gateway talks to a handful of backends, so the pool is a short list per scheme and
//! authority, searched in order; a connection is taken when hyper says it can take a request
//! ([`SendRequest::is_ready`]) and put back at once after its request is handed over: it is
//! ready again when the previous response has been read, with no task spawned to wait for
//! that. hyper-util's legacy pool (hashing its key twice, boxing the request future, a task
//! when a connection is not ready yet) cost ~9,000 instructions per request on top of this
//! (docs/performance.md, "Fifth step").
//!
//! A connection the backend closed while idle is dropped from the list; a request that a
//! reused connection could not send (closed as it was taken) is sent again on a new one,
//! as hyper hands it back untouched. An idle connection is closed after the idle timeout.

use std::future::poll_fn;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use tower_service::Service;

use crate::body::BoxError;
use crate::client::{Connector, SendBody};

/// Why a request got no response.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection: DNS, TCP connect, TLS, or their timeout.
    Connect(BoxError),
    /// The request or response failed on an open connection.
    Request(hyper::Error),
}

/// Keep-alive connections per backend (scheme and authority), for one thread or shared.
pub(crate) struct Pool {
    connector: Connector,
    idle_timeout: Duration,
    hosts: Mutex<Hosts>,
}

#[derive(Default)]
struct Hosts {
    list: Vec<Host>,
    /// The task that closes idle connections runs (started with the first connection, on
    /// the runtime that uses the pool).
    reaping: bool,
}

struct Host {
    scheme: Scheme,
    authority: Authority,
    conns: Vec<Conn>,
}

struct Conn {
    sender: SendRequest<SendBody>,
    /// When its last request was sent: a ready connection idle since longer than the pool's
    /// idle timeout is closed.
    sent_at: Instant,
}

impl Conn {
    fn idle_too_long(&self, now: Instant, timeout: Duration) -> bool {
        self.sender.is_ready() && now.duration_since(self.sent_at) > timeout
    }
}

impl Pool {
    pub(crate) fn new(connector: Connector, idle_timeout: Duration) -> Arc<Self> {
        Arc::new(Self {
            connector,
            idle_timeout,
            hosts: Mutex::new(Hosts::default()),
        })
    }

    /// Sends `request` (absolute URI, `Host` header set) on a pooled connection to its
    /// authority, or a new one; resolves with the response head.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut request: Request<SendBody>,
    ) -> Result<Response<Incoming>, SendError> {
        let target = request.uri().clone();
        if !request.headers().contains_key(http::header::HOST) {
            // Signed requests carry theirs; HTTP/1.1 needs one on every request.
            if let Ok(host) = shared::sigv4::sign::host_header_value(&target) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        // HTTP/1.1 sends the origin form; the path and query as given, never re-parsed.
        let mut origin = http::uri::Parts::default();
        origin.path_and_query = Some(
            target
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        *request.uri_mut() =
            Uri::from_parts(origin).map_err(|e| SendError::Connect(Box::new(e)))?;
        let mut pooled = self.take(&target);
        loop {
            let reused = pooled.is_some();
            let mut sender = match pooled.take() {
                Some(sender) => sender,
                None => self.connect(&target).await?,
            };
            let response = sender.try_send_request(request);
            // Back at once: `is_ready` says when the response has been read.
            self.put(&target, sender);
            match response.await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    // A pooled connection that closed as it was taken: nothing was sent.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Request(e.into_error())),
                },
            }
        }
    }

    /// A ready connection to `uri`'s authority, the most recently used first (its socket is
    /// the likeliest to be open and warm).
    ///
    /// The list is searched from its end, where connections are put back as soon as their
    /// request is sent: the busy ones are skipped and the closed ones met on the way dropped,
    /// so a request pays for the connections in use, not for every idle one (after a burst,
    /// hundreds). Closed ones cannot pile up: a new connection is only made after a search of
    /// the whole list, which drops them all, so a backend that closes every connection after
    /// its answer (`Connection: close`) does not fill the list between two runs of the reaper.
    /// (Long idle ones are the reaper's, so a request pays for no clock reads here.)
    fn take(&self, uri: &Uri) -> Option<SendRequest<SendBody>> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let host = hosts.list.iter_mut().find(|h| h.is(uri))?;
        let mut i = host.conns.len();
        while i > 0 {
            i -= 1;
            let sender = &host.conns[i].sender;
            if sender.is_ready() {
                return Some(host.conns.swap_remove(i).sender);
            }
            if sender.is_closed() {
                // What takes its place was already looked at.
                host.conns.swap_remove(i);
            }
        }
        None
    }

    fn put(self: &Arc<Self>, uri: &Uri, sender: SendRequest<SendBody>) {
        let conn = Conn {
            sender,
            sent_at: Instant::now(),
        };
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        if !hosts.reaping {
            hosts.reaping = true;
            self.start_reaping();
        }
        match hosts.list.iter_mut().find(|h| h.is(uri)) {
            Some(host) => host.conns.push(conn),
            None => {
                let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
                    return;
                };
                hosts.list.push(Host {
                    scheme: scheme.clone(),
                    authority: authority.clone(),
                    conns: vec![conn],
                });
            }
        }
    }

    async fn connect(&self, uri: &Uri) -> Result<SendRequest<SendBody>, SendError> {
        let mut connector = self.connector.clone();
        poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(uri.clone())
            .await
            .map_err(SendError::Connect)?;
        let (sender, connection) = http1::handshake(io)
            .await
            .map_err(|e| SendError::Connect(Box::new(e)))?;
        // The connection's own task on this runtime: the thread that sends on it drives it.
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "backend connection ended");
            }
        });
        Ok(sender)
    }

    /// Closes idle connections every `idle_timeout` while the pool lives (a pool with no
    /// requests would otherwise keep them until the backend closes them).
    fn start_reaping(self: &Arc<Self>) {
        let pool: Weak<Self> = Arc::downgrade(self);
        let every = self.idle_timeout.max(Duration::from_millis(100));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(pool) = pool.upgrade() else { break };
                pool.prune();
            }
        });
    }

    fn prune(&self) {
        let now = Instant::now();
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        for host in &mut hosts.list {
            host.conns
                .retain(|c| !c.sender.is_closed() && !c.idle_too_long(now, self.idle_timeout));
        }
        hosts.list.retain(|h| !h.conns.is_empty());
    }

    /// Connections listed for `uri`'s authority, and how many of them are open (tests).
    #[cfg(test)]
    pub(crate) fn listed_and_open(&self, uri: &Uri) -> (usize, usize) {
        let hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let conns = hosts
            .list
            .iter()
            .filter(|h| h.is(uri))
            .flat_map(|h| &h.conns);
        conns.fold((0, 0), |(listed, open), c| {
            (listed + 1, open + usize::from(!c.sender.is_closed()))
        })
    }
}

impl Host {
    fn is(&self, uri: &Uri) -> bool {
        // Byte for byte (one backend's URIs all spell it the same): `Authority`'s own `==`
        // ignores case, a few hundred instructions per request.
        uri.authority().map(Authority::as_str) == Some(self.authority.as_str())
            && uri.scheme_str() == Some(self.scheme.as_str())
    }
}
