//! Routes inbound MQTT publishes to plugins by topic filter.
//!
//! Sits between `mqtt` (which owns the connection) and the plugin mailboxes. Built once from
//! the loaded plugins; pure: never awaits the network, never calls into wasm.

use edgewise_signing::TopicFilter;

/// Topic filters and the plugins (by index) behind them.
#[derive(Debug, Clone, Default)]
pub struct Router {
    routes: Vec<(TopicFilter, usize)>,
}

impl Router {
    /// A router for plugins given as (index, subscribe filters).
    pub fn new<'a>(plugins: impl IntoIterator<Item = (usize, &'a [TopicFilter])>) -> Self {
        let routes = plugins
            .into_iter()
            .flat_map(|(ix, filters)| filters.iter().map(move |f| (f.clone(), ix)))
            .collect();
        Self { routes }
    }

    /// The plugins a message on `topic` goes to, each once, in plugin order.
    pub fn route(&self, topic: &str) -> Vec<usize> {
        let mut targets: Vec<usize> = self
            .routes
            .iter()
            .filter(|(f, _)| f.matches(topic))
            .map(|(_, ix)| *ix)
            .collect();
        targets.sort_unstable();
        targets.dedup();
        targets
    }

    /// The filters to subscribe to: distinct, none covered by another, and no two
    /// overlapping. A broker may send a copy of a message for each subscription it matches
    /// (MQTT 3.1.1 §3.3.5; rumqttd does), and the gateway routes each copy by topic to every
    /// plugin it matches: a filter covered by another would only bring those plugins a second
    /// copy, and so would two that share some topics (`sensors/+/temp`, `sensors/kitchen/+`):
    /// those are subscribed as one filter that covers both (`sensors/+/+`), and what it brings
    /// that no plugin asked for is acknowledged and dropped ([`Router::route`] finds nobody).
    pub fn subscriptions(&self) -> Vec<String> {
        let mut filters: Vec<TopicFilter> = self.routes.iter().map(|(f, _)| f.clone()).collect();
        loop {
            filters.sort_by(|a, b| a.as_str().cmp(b.as_str()));
            filters.dedup();
            let all = filters.clone();
            filters.retain(|f| !all.iter().any(|g| g != f && g.covers(f)));
            let joined = (0..filters.len())
                .flat_map(|i| (i + 1..filters.len()).map(move |j| (i, j)))
                .filter(|&(i, j)| filters[i].overlaps(&filters[j]))
                .find_map(|(i, j)| filters[i].join(&filters[j]));
            match joined {
                // The joined filter covers both: the next round's covering step drops them.
                Some(joined) => filters.push(joined),
                None => break,
            }
        }
        filters.into_iter().map(|f| f.as_str().to_owned()).collect()
    }

    /// Whether some plugin asked for exactly `filter` (else the gateway joined it).
    pub fn is_asked_for(&self, filter: &str) -> bool {
        self.routes.iter().any(|(f, _)| f.as_str() == filter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(list: &[&str]) -> Vec<TopicFilter> {
        list.iter()
            .map(|f| TopicFilter::parse(f).expect("valid filter"))
            .collect()
    }

    #[test]
    fn a_message_reaches_every_plugin_whose_filter_matches_once() {
        let a = filters(&["plant/+/temp", "plant/#"]);
        let b = filters(&["$share/g/plant/7/temp"]);
        let c = filters(&["home/#"]);
        let router = Router::new([(0, a.as_slice()), (1, b.as_slice()), (2, c.as_slice())]);
        assert_eq!(router.route("plant/7/temp"), vec![0, 1]);
        assert_eq!(router.route("plant/8/temp"), vec![0]);
        assert_eq!(router.route("home/door"), vec![2]);
    }

    #[test]
    fn message_to_an_unsubscribed_topic_reaches_no_plugin() {
        let a = filters(&["plant/+/temp"]);
        let router = Router::new([(0, a.as_slice())]);
        assert!(router.route("office/temp").is_empty());
    }

    #[test]
    fn subscriptions_are_distinct_and_none_is_covered_by_another() {
        let a = filters(&["x/#", "y", "sensors/+/reading"]);
        let b = filters(&["x/#", "x/+/z", "sensors/#", "$share/g/sensors/1"]);
        let router = Router::new([(0, a.as_slice()), (1, b.as_slice())]);
        assert_eq!(
            router.subscriptions(),
            vec!["$share/g/sensors/1", "sensors/#", "x/#", "y"]
        );
        // Each plugin still gets what its own filters match.
        assert_eq!(router.route("sensors/7/reading"), vec![0, 1]);
    }

    #[test]
    fn filters_that_share_some_topics_are_subscribed_as_one_that_covers_both() {
        let a = filters(&["sensors/+/temp", "home/door"]);
        let b = filters(&["sensors/kitchen/+", "sensors/kitchen/light/#"]);
        let c = filters(&["plant/+/vibration", "plant/7/+/raw"]);
        let router = Router::new([(0, a.as_slice()), (1, b.as_slice()), (2, c.as_slice())]);
        assert_eq!(
            router.subscriptions(),
            vec![
                "home/door",
                "plant/+/vibration",
                "plant/7/+/raw",
                "sensors/+/+/#"
            ]
        );
        assert!(!router.is_asked_for("sensors/+/+/#") && router.is_asked_for("home/door"));
        // Routing is by the plugins' own filters: the broader subscription brings nobody more.
        assert_eq!(router.route("sensors/kitchen/temp"), vec![0, 1]);
        assert_eq!(router.route("sensors/hall/humidity"), Vec::<usize>::new());
        assert_eq!(router.route("sensors/kitchen/light/on"), vec![1]);
    }
}
