//! The broker session's subscriptions: what the gateway wants, and what the session may still
//! hold that nobody wants any more.
//!
//! Pure bookkeeping, no I/O: each method says what to send, the gateway sends it, and keeps
//! [`Subscriptions::session`] in the journal. A persistent session outlives the process and
//! the connection, so a filter is let go only once the broker has acknowledged its
//! UNSUBSCRIBE: one lost with a dropped connection, or left by an earlier process, is sent
//! again at the next connection. Otherwise a filter dropped while the link was down would
//! keep bringing messages (and, on a broker that copies per subscription, duplicates) for as
//! long as the session lives.

use std::collections::{BTreeMap, BTreeSet};

/// What the gateway subscribes to, and what it is unsubscribing from.
#[derive(Debug, Default)]
pub struct Subscriptions {
    /// The plugins' filters: the router's covering set.
    routed: BTreeSet<String>,
    /// The gateway's own: its control topics, and bundles the manager awaits.
    own: BTreeSet<String>,
    /// Filters the session may still hold that nobody wants, each with whether its
    /// UNSUBSCRIBE went out on the current connection.
    dropping: BTreeMap<String, bool>,
    /// UNSUBACKs the current connection still owes.
    unsubacks_due: usize,
}

impl Subscriptions {
    /// Starts from what the journal says the session held (`session`) and what is wanted now.
    pub fn new(session: BTreeSet<String>, routed: BTreeSet<String>, own: BTreeSet<String>) -> Self {
        let dropping = session
            .into_iter()
            .filter(|f| !routed.contains(f) && !own.contains(f))
            .map(|f| (f, false))
            .collect();
        Self {
            routed,
            own,
            dropping,
            unsubacks_due: 0,
        }
    }

    /// Everything the session may hold: what is wanted and what is being let go. This is what
    /// the journal keeps, for the next process.
    pub fn session(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.routed.union(&self.own).cloned().collect();
        all.extend(self.dropping.keys().cloned());
        all
    }

    /// A new connection: what to unsubscribe from (sent first) and what to subscribe to.
    /// Whatever was sent on an earlier connection and not acknowledged goes again.
    pub fn connected(&mut self) -> (Vec<String>, Vec<String>) {
        self.unsubacks_due = 0;
        self.dropping.values_mut().for_each(|sent| *sent = false);
        let unsubscribe = self.dropping.keys().cloned().collect();
        let subscribe = self.routed.union(&self.own).cloned().collect();
        (unsubscribe, subscribe)
    }

    /// The router's covering set changed to `wanted`: the filters to subscribe to and those to
    /// let go.
    pub fn route(&mut self, wanted: BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let added: Vec<String> = wanted.difference(&self.routed).cloned().collect();
        let stale: Vec<String> = self.routed.difference(&wanted).cloned().collect();
        self.routed = wanted;
        (self.want(added), self.drop(stale))
    }

    /// The gateway wants `topics` for itself: those to subscribe to.
    pub fn add_own(&mut self, topics: Vec<String>) -> Vec<String> {
        let added = topics
            .into_iter()
            .filter(|t| self.own.insert(t.clone()))
            .collect();
        self.want(added)
    }

    /// The gateway no longer wants `topics` for itself: those to let go.
    pub fn remove_own(&mut self, topics: Vec<String>) -> Vec<String> {
        let removed = topics.into_iter().filter(|t| self.own.remove(t)).collect();
        self.drop(removed)
    }

    /// The UNSUBSCRIBE of `filter` went out on the current connection.
    pub fn unsubscribe_sent(&mut self, filter: &str) {
        if let Some(sent) = self.dropping.get_mut(filter) {
            *sent = true;
        }
        self.unsubacks_due += 1;
    }

    /// An UNSUBACK arrived. Once the connection owes none, every filter whose UNSUBSCRIBE
    /// went out on it is gone from the session; returns whether any was.
    pub fn unsubscribed(&mut self) -> bool {
        self.unsubacks_due = self.unsubacks_due.saturating_sub(1);
        if self.unsubacks_due > 0 {
            return false;
        }
        let before = self.dropping.len();
        self.dropping.retain(|_, sent| !*sent);
        self.dropping.len() != before
    }

    /// Whether the session may still hold filters that nobody wants.
    pub fn is_dropping(&self) -> bool {
        !self.dropping.is_empty()
    }

    fn want(&mut self, filters: Vec<String>) -> Vec<String> {
        // Wanted again before it was let go: the SUBSCRIBE after it wins.
        filters.iter().for_each(|f| {
            self.dropping.remove(f);
        });
        filters
    }

    fn drop(&mut self, filters: Vec<String>) -> Vec<String> {
        let stale: Vec<String> = filters
            .into_iter()
            .filter(|f| !self.routed.contains(f) && !self.own.contains(f))
            .collect();
        for filter in &stale {
            self.dropping.insert(filter.clone(), false);
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(filters: &[&str]) -> BTreeSet<String> {
        filters.iter().map(|f| f.to_string()).collect()
    }

    #[test]
    fn what_an_earlier_process_left_is_unsubscribed_at_the_first_connection() {
        let mut subs = Subscriptions::new(set(&["a/#", "old/+"]), set(&["a/#"]), set(&["gw/cmd"]));
        let (unsubscribe, subscribe) = subs.connected();
        assert_eq!(
            (unsubscribe, subscribe),
            (vec!["old/+".into()], vec!["a/#".into(), "gw/cmd".into()])
        );
        assert_eq!(subs.session(), set(&["a/#", "gw/cmd", "old/+"]));
    }

    #[test]
    fn a_filter_is_let_go_only_when_the_broker_acknowledges_its_unsubscribe() {
        let mut subs = Subscriptions::new(set(&[]), set(&["a/+", "b/+"]), set(&[]));
        subs.connected();
        let (_, stale) = subs.route(set(&["a/+"]));
        assert_eq!(stale, vec!["b/+".to_string()]);
        subs.unsubscribe_sent("b/+");
        // The connection drops before the UNSUBACK: the next one sends it again.
        assert!(subs.session().contains("b/+"));
        let (unsubscribe, _) = subs.connected();
        assert_eq!(unsubscribe, vec!["b/+".to_string()]);
        subs.unsubscribe_sent("b/+");
        assert!(subs.unsubscribed());
        assert_eq!(subs.session(), set(&["a/+"]));
        assert!(!subs.is_dropping());
    }

    #[test]
    fn an_unsubscribe_that_could_not_be_sent_waits_for_the_next_connection() {
        let mut subs = Subscriptions::new(set(&[]), set(&[]), set(&["x", "y"]));
        subs.connected();
        assert_eq!(
            subs.remove_own(vec!["x".into(), "y".into(), "z".into()])
                .len(),
            2
        );
        subs.unsubscribe_sent("x");
        // "y" did not fit the request queue: x's UNSUBACK lets go of x only.
        assert!(subs.unsubscribed());
        assert_eq!(subs.session(), set(&["y"]));
        assert_eq!(subs.connected().0, vec!["y".to_string()]);
    }

    #[test]
    fn a_filter_wanted_again_before_it_was_let_go_is_kept() {
        let mut subs = Subscriptions::new(set(&[]), set(&["a/+"]), set(&[]));
        subs.connected();
        subs.route(set(&[]));
        subs.unsubscribe_sent("a/+");
        let (subscribe, _) = subs.route(set(&["a/+"]));
        assert_eq!(subscribe, vec!["a/+".to_string()]);
        subs.unsubscribed();
        assert_eq!(subs.session(), set(&["a/+"]));
        assert_eq!(subs.connected().0, Vec::<String>::new());
    }

    #[test]
    fn a_filter_the_gateway_and_the_plugins_both_want_is_never_let_go() {
        let mut subs = Subscriptions::new(set(&[]), set(&["t"]), set(&["t"]));
        assert_eq!(subs.remove_own(vec!["t".into()]), Vec::<String>::new());
        assert_eq!(subs.session(), set(&["t"]));
    }
}
