//! One watch on every NodeShellSession for the whole gateway, fanned out by name to whoever
//! waits on a session: an open waiting for the controller's decision (`access`), a live
//! session learning its takeovers (Closing, `spec.terminate`) and its deletion (`live`).
//! Neither starts an apiserver watch (and a connection) of its own. Only the latest news of
//! a session is kept for each subscriber, which is all a decision or a takeover reads.
//!
//! It also keeps who holds a cap slot ([`SlotHolders`]), so an open counts the caps without
//! listing every session.
//!
//! Subscribers are bounded by their owners: one per open in flight and one per live session,
//! each removed when its [`Subscription`] is dropped, on every exit path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use crate::api::{CapCount, NodeShellSession};
use crate::gateway::slot_holders::SlotHolders;

/// The latest news of one session.
#[derive(Clone, Debug)]
pub enum SessionNews {
    /// The session as the apiserver now has it.
    Changed(Box<NodeShellSession>),
    /// The session was deleted.
    Deleted,
}

/// Where one subscriber's news is sent.
type News = watch::Sender<Option<SessionNews>>;

/// Where each session's news goes: every subscriber of a name, by subscription id (an open
/// and the live session of the same name may overlap for a moment).
#[derive(Default)]
struct Table {
    by_name: HashMap<String, HashMap<u64, News>>,
    next_id: u64,
    /// Who holds a cap slot, updated before any news of the same event is handed out (so
    /// an open that learned its decision here finds it counted by the next open).
    holders: SlotHolders,
}

impl Table {
    /// Registers a subscriber of `name`: its id, where its news is sent and where it
    /// arrives (made before it is registered, so no news is sent unseen).
    fn insert(&mut self, name: &str) -> (u64, News, watch::Receiver<Option<SessionNews>>) {
        let id = self.next_id;
        self.next_id += 1;
        let (news, rx) = watch::channel(None);
        self.by_name
            .entry(name.to_string())
            .or_default()
            .insert(id, news.clone());
        (id, news, rx)
    }

    /// Removes subscriber `id` of `name` (and the name, once nobody waits on it).
    fn remove(&mut self, name: &str, id: u64) {
        if let Some(subscribers) = self.by_name.get_mut(name) {
            subscribers.remove(&id);
            if subscribers.is_empty() {
                self.by_name.remove(name);
            }
        }
    }

    /// Hands `news` of `name` to each of its subscribers.
    fn deliver(&self, name: &str, news: &SessionNews) {
        for subscriber in self.by_name.get(name).into_iter().flat_map(|s| s.values()) {
            subscriber.send_replace(Some(news.clone()));
        }
    }

    /// Subscribers registered now.
    fn len(&self) -> usize {
        self.by_name.values().map(HashMap::len).sum()
    }
}

type Shared = Arc<Mutex<Table>>;

fn lock(table: &Shared) -> MutexGuard<'_, Table> {
    table.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The gateway's one session watch and its subscribers. Cheap to clone (clones share the
/// watch).
#[derive(Clone)]
pub struct SessionWatch {
    api: Api<NodeShellSession>,
    table: Shared,
    /// The watch task, started with the first subscriber.
    started: Arc<OnceLock<()>>,
}

impl std::fmt::Debug for SessionWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionWatch")
            .field("subscribers", &self.subscribers())
            .finish_non_exhaustive()
    }
}

impl SessionWatch {
    /// The watch over every session `client` can see (started on first use).
    pub fn new(client: Client) -> Self {
        Self {
            api: Api::all(client),
            table: Arc::default(),
            started: Arc::default(),
        }
    }

    /// Subscribes to session `name`, which this gateway has just created, for its decision:
    /// every change the gateway's watch sees from now on. The session is read (once, after
    /// the subscription is registered) only when the watch had already seen it decided
    /// before that: the decision's news would otherwise be missed. Otherwise the decision
    /// comes through the watch after the subscription, with no read. Fails when that read
    /// fails for another reason than the session being gone (the apiserver cannot be
    /// reached), for a caller that must answer at once.
    pub async fn subscribe_created(&self, name: &str) -> Result<Subscription, kube::Error> {
        self.start();
        let (subscription, news, decided) = Subscription::register_seeing(&self.table, name);
        if !decided {
            return Ok(subscription);
        }
        let current = match self.api.get(name).await {
            Ok(mut session) => {
                trim(&mut session);
                lock(&self.table).holders.observed(&session);
                SessionNews::Changed(Box::new(session))
            }
            Err(kube::Error::Api(e)) if e.code == 404 => SessionNews::Deleted,
            Err(e) => return Err(e),
        };
        // News the watch brought meanwhile is newer than this read.
        news.send_if_modified(|latest| latest.is_none().then(|| *latest = Some(current)).is_some());
        Ok(subscription)
    }

    /// Subscribes to session `name` with no read: news of every change the watch sees from
    /// now on. For a caller about to write the session on a resourceVersion it read earlier:
    /// that write's own event then comes through the watch, carrying every change before it,
    /// and a change between the read and the write makes the write fail instead.
    pub fn subscribe_before_write(&self, name: &str) -> Subscription {
        self.start();
        Subscription::register(&self.table, name).0
    }

    /// Subscribers registered now (one per open in flight, one per live session).
    pub fn subscribers(&self) -> usize {
        lock(&self.table).len()
    }

    /// Starts the watch now (it otherwise starts with the first subscriber), so the caps
    /// count is ready for the first open.
    pub fn start(&self) {
        self.started.get_or_init(|| {
            let events = watcher(self.api.clone(), watcher::Config::default())
                .default_backoff()
                .modify(trim)
                .boxed();
            tokio::spawn(fan_out(events, self.table.clone()));
        });
    }

    /// The live sessions of `policy`, `sub`'s and everyone's, as the watch last saw them;
    /// `None` until its first listing is complete.
    pub fn cap_count(&self, policy: &str, sub: &str) -> Option<CapCount> {
        lock(&self.table).holders.count(policy, sub)
    }

    /// Every session the watch knows, counted by phase; `None` until its first listing is
    /// complete.
    pub fn phase_counts(&self) -> Option<Vec<(String, i64)>> {
        lock(&self.table).holders.by_phase()
    }

    /// A subscription without the first read or the watch (tests feed it with
    /// [`Self::deliver`]).
    #[cfg(test)]
    pub(crate) fn subscribe_detached(&self, name: &str) -> Subscription {
        Subscription::register(&self.table, name).0
    }

    /// Hands `news` of `name` to its subscribers (only that: the holders are not told).
    #[cfg(test)]
    pub(crate) fn deliver(&self, name: &str, news: SessionNews) {
        lock(&self.table).deliver(name, &news);
    }

    /// Takes `event` as the watch takes it: holders, then news.
    #[cfg(test)]
    pub(crate) fn see(&self, event: watcher::Event<NodeShellSession>) {
        hand_out(&mut lock(&self.table), event);
    }
}

/// Drops what nothing here reads from a session as the watch or a read brings it:
/// managedFields, most of an object, which a live session would otherwise keep in its
/// latest news for its whole life.
fn trim(session: &mut NodeShellSession) {
    session.metadata.managed_fields = None;
}

/// Hands each event of the watch to the subscribers of its session, if any.
async fn fan_out(
    mut events: BoxStream<'static, Result<watcher::Event<NodeShellSession>, watcher::Error>>,
    table: Shared,
) {
    while let Some(event) = events.next().await {
        let Ok(event) = event else {
            continue;
        };
        hand_out(&mut lock(&table), event);
    }
}

/// One watch event: the slot holders updated, then its news handed to its session's
/// subscribers, under one lock (so a subscription registered under it either gets the news
/// or sees it in the holders).
fn hand_out(table: &mut Table, event: watcher::Event<NodeShellSession>) {
    match &event {
        watcher::Event::Init => table.holders.listing_started(),
        watcher::Event::InitApply(s) => table.holders.listed(s),
        watcher::Event::InitDone => table.holders.listing_done(),
        watcher::Event::Apply(s) => table.holders.observed(s),
        watcher::Event::Delete(s) => table.holders.deleted(&s.name_any()),
    }
    if let Some((name, news)) = news_of(event) {
        table.deliver(&name, &news);
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

/// One subscriber's news of a session; unsubscribes when dropped.
pub struct Subscription {
    rx: watch::Receiver<Option<SessionNews>>,
    /// Where the news is sent, kept to take it out once read (see [`Self::next`]).
    news: News,
    id: u64,
    name: String,
    table: Shared,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Registers a subscriber of `name` in `table`: the subscription, and where its news is
    /// sent.
    fn register(table: &Shared, name: &str) -> (Self, News) {
        let (subscription, news, _) = Self::register_seeing(table, name);
        (subscription, news)
    }

    /// [`Self::register`], and whether the watch had already seen the session decided, both
    /// under one lock: news handed out after it reaches this subscription, news before it
    /// is in that answer.
    fn register_seeing(table: &Shared, name: &str) -> (Self, News, bool) {
        let mut locked = lock(table);
        let (id, news, rx) = locked.insert(name);
        let decided = locked.holders.seen_decided(name);
        drop(locked);
        let subscription = Self {
            rx,
            news: news.clone(),
            id,
            name: name.to_string(),
            table: table.clone(),
        };
        (subscription, news, decided)
    }

    /// The next news of the session (the latest, when several came meanwhile); `None` once
    /// the watch is gone. The news is taken out, not copied: a live session waits on its
    /// subscription for its whole life, and a copy left behind would keep its session
    /// object (about 2 KB deserialised) beside the one the session already holds.
    pub async fn next(&mut self) -> Option<SessionNews> {
        loop {
            self.rx.changed().await.ok()?;
            let mut taken = None;
            // Not a change for the receiver: the version stays, so nothing is woken.
            self.news.send_if_modified(|latest| {
                taken = latest.take();
                false
            });
            // News sent between the wake-up and the take was taken with it, and its wake-up
            // finds nothing: wait again.
            if taken.is_some() {
                return taken;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.table).remove(&self.name, self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::api::SessionPhase;
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

    /// A subscription of `table` as [`SessionWatch::subscribe_before_write`] makes it.
    fn subscribe(table: &Shared, name: &str) -> Subscription {
        Subscription::register(table, name).0
    }

    #[tokio::test]
    async fn an_open_and_a_live_session_of_one_name_both_hear_its_news() {
        let table = Shared::default();
        let mut open = subscribe(&table, "shell-1");
        let mut live = subscribe(&table, "shell-1");
        let other = subscribe(&table, "shell-2");
        lock(&table).deliver("shell-1", &SessionNews::Deleted);
        assert!(matches!(open.next().await, Some(SessionNews::Deleted)));
        assert!(matches!(live.next().await, Some(SessionNews::Deleted)));
        assert!(!other.rx.has_changed().unwrap(), "shell-2 heard nothing");
        // The open's subscription goes; the live session's stays and still hears news.
        drop(open);
        assert_eq!(lock(&table).len(), 2);
        let s = session("shell-1", "alice", "p", 1, None);
        lock(&table).deliver("shell-1", &SessionNews::Changed(Box::new(s)));
        assert!(matches!(live.next().await, Some(SessionNews::Changed(_))));
    }

    /// A live session waits on its subscription for its whole life: the news it read is not
    /// kept in the subscription as well, and news sent after it is still heard.
    #[tokio::test]
    async fn read_news_is_not_kept_in_the_subscription() {
        let table = Shared::default();
        let mut live = subscribe(&table, "shell-1");
        let s = session("shell-1", "alice", "p", 1, None);
        lock(&table).deliver("shell-1", &SessionNews::Changed(Box::new(s.clone())));
        assert!(matches!(live.next().await, Some(SessionNews::Changed(_))));
        assert!(live.rx.borrow().is_none(), "the news read is still held");
        assert!(!live.rx.has_changed().unwrap(), "taking it woke nobody");
        // Two news before a read: the latest is what is read, once.
        lock(&table).deliver("shell-1", &SessionNews::Changed(Box::new(s)));
        lock(&table).deliver("shell-1", &SessionNews::Deleted);
        assert!(matches!(live.next().await, Some(SessionNews::Deleted)));
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), live.next()).await;
        assert!(again.is_err(), "no news is read twice");
    }

    /// An open's subscription to the session it created reads it only when the watch has
    /// already seen it decided (that news came before the subscription); otherwise the
    /// decision comes as news. The apiserver here cannot be reached, so a read would fail.
    #[tokio::test]
    async fn an_open_reads_its_new_session_only_when_the_watch_saw_it_decided() {
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let watch = SessionWatch::new(Client::try_from(config).unwrap());
        let unseen = watch.subscribe_created("shell-1").await;
        let mut unseen = unseen.expect("a session the watch has not seen is not read");
        let pending = session("shell-2", "alice", "p", 1, Some(SessionPhase::Pending));
        watch.see(watcher::Event::Apply(pending));
        let mut pending = watch
            .subscribe_created("shell-2")
            .await
            .expect("a session the watch saw Pending is not read");
        let admitted = session("shell-3", "alice", "p", 1, Some(SessionPhase::Admitted));
        watch.see(watcher::Event::Apply(admitted));
        assert!(
            watch.subscribe_created("shell-3").await.is_err(),
            "a session the watch saw decided is read (and the read fails here)"
        );
        // The same holds for a session seen in a listing in progress.
        watch.see(watcher::Event::Init);
        let rejected = session("shell-4", "alice", "p", 1, Some(SessionPhase::Rejected));
        watch.see(watcher::Event::InitApply(rejected));
        assert!(watch.subscribe_created("shell-4").await.is_err());
        // The decisions that come after the subscriptions reach them.
        for (name, subscription) in [("shell-1", &mut unseen), ("shell-2", &mut pending)] {
            let decided = session(name, "alice", "p", 1, Some(SessionPhase::Admitted));
            watch.see(watcher::Event::Apply(decided));
            let news = subscription.next().await;
            assert!(
                matches!(&news, Some(SessionNews::Changed(s)) if s.phase() == SessionPhase::Admitted),
                "{name}: {news:?}"
            );
        }
    }

    #[test]
    fn dropped_subscriptions_leave_nothing_behind() {
        let table = Shared::default();
        let subscriptions: Vec<_> = (0..200)
            .map(|n| subscribe(&table, &format!("shell-{}", n % 7)))
            .collect();
        assert_eq!(lock(&table).len(), 200);
        drop(subscriptions);
        assert_eq!(lock(&table).len(), 0);
        assert!(lock(&table).by_name.is_empty(), "no name is kept");
    }
}
