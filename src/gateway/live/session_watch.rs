//! One watch on every NodeShellSession for the whole gateway, fanned out to its live
//! sessions by name, instead of one apiserver watch (and one connection) per session. A
//! session learns its takeovers (Closing, `spec.terminate`) and its deletion from it; only
//! the latest news of a session is kept for it, which is all a takeover decision reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::ResourceExt;
use kube::runtime::watcher;
use tokio::sync::watch;

use super::status::StatusApi;
use crate::api::NodeShellSession;

/// The latest news of one session.
#[derive(Clone, Debug)]
pub enum SessionNews {
    /// The session as the apiserver now has it.
    Changed(Box<NodeShellSession>),
    /// The session was deleted.
    Deleted,
}

/// One subscriber: its id (a later session of the same name is another subscriber) and
/// where its news goes.
struct Subscriber {
    id: u64,
    news: watch::Sender<Option<SessionNews>>,
}

type Subscribers = Arc<Mutex<HashMap<String, Subscriber>>>;

fn lock(subscribers: &Subscribers) -> MutexGuard<'_, HashMap<String, Subscriber>> {
    subscribers.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The gateway's one session watch and its subscribers. Cheap to share.
pub struct SessionWatch {
    status: StatusApi,
    subscribers: Subscribers,
    next_id: AtomicU64,
    /// The watch task, started with the first subscriber.
    started: OnceLock<()>,
}

impl SessionWatch {
    /// The watch over `status`'s sessions (started on first use).
    pub fn new(status: StatusApi) -> Self {
        Self {
            status,
            subscribers: Arc::default(),
            next_id: AtomicU64::new(0),
            started: OnceLock::new(),
        }
    }

    /// Subscribes the session `name`: its current object first (read once, so a takeover
    /// that came before the subscription is not missed), then every change the gateway's
    /// watch sees, until the subscription is dropped.
    pub async fn subscribe(&self, name: &str) -> Subscription {
        self.started.get_or_init(|| {
            tokio::spawn(fan_out(self.status.watch_all(), self.subscribers.clone()));
        });
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (news, rx) = watch::channel(None);
        lock(&self.subscribers).insert(
            name.to_string(),
            Subscriber {
                id,
                news: news.clone(),
            },
        );
        let current = match self.status.get(name).await {
            Ok(session) => Some(SessionNews::Changed(Box::new(session))),
            Err(kube::Error::Api(e)) if e.code == 404 => Some(SessionNews::Deleted),
            Err(_) => None,
        };
        if let Some(current) = current {
            // News the watch brought meanwhile is newer than this read.
            news.send_if_modified(|latest| {
                latest.is_none().then(|| *latest = Some(current)).is_some()
            });
        }
        Subscription {
            rx,
            id,
            name: name.to_string(),
            subscribers: self.subscribers.clone(),
        }
    }
}

/// Hands each event of the watch to the subscriber of its session, if any.
async fn fan_out(
    mut events: BoxStream<'static, Result<watcher::Event<NodeShellSession>, watcher::Error>>,
    subscribers: Subscribers,
) {
    while let Some(event) = events.next().await {
        let Some((name, news)) = event.ok().and_then(news_of) else {
            continue;
        };
        if let Some(subscriber) = lock(&subscribers).get(&name) {
            subscriber.news.send_replace(Some(news));
        }
    }
}

/// The session a watch event is about and what it says; `None` for the watch's own
/// bookkeeping events.
fn news_of(event: watcher::Event<NodeShellSession>) -> Option<(String, SessionNews)> {
    match event {
        watcher::Event::Apply(s) | watcher::Event::InitApply(s) => {
            Some((s.name_any(), SessionNews::Changed(Box::new(s))))
        }
        watcher::Event::Delete(s) => Some((s.name_any(), SessionNews::Deleted)),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// One session's news; unsubscribes when dropped.
pub struct Subscription {
    rx: watch::Receiver<Option<SessionNews>>,
    id: u64,
    name: String,
    subscribers: Subscribers,
}

impl Subscription {
    /// The next news of the session (the latest, when several came meanwhile).
    pub async fn next(&mut self) -> Option<SessionNews> {
        self.rx.changed().await.ok()?;
        self.rx.borrow_and_update().clone()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut subscribers = lock(&self.subscribers);
        if subscribers.get(&self.name).is_some_and(|s| s.id == self.id) {
            subscribers.remove(&self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::session;

    #[test]
    fn watch_events_become_news_of_their_session() {
        let s = session("shell-1", "alice", "p", 1, None);
        let Some((name, SessionNews::Changed(got))) = news_of(watcher::Event::Apply(s.clone()))
        else {
            panic!("an applied session is news");
        };
        assert_eq!((name.as_str(), got.name_any()), ("shell-1", s.name_any()));
        assert!(matches!(
            news_of(watcher::Event::InitApply(s.clone())),
            Some((_, SessionNews::Changed(_)))
        ));
        assert!(matches!(
            news_of(watcher::Event::Delete(s)),
            Some((n, SessionNews::Deleted)) if n == "shell-1"
        ));
        assert!(news_of(watcher::Event::Init).is_none());
        assert!(news_of(watcher::Event::InitDone).is_none());
    }
}
