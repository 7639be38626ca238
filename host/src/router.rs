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

    /// Every distinct filter to subscribe to.
    pub fn subscriptions(&self) -> Vec<String> {
        let mut filters: Vec<String> = self
            .routes
            .iter()
            .map(|(f, _)| f.as_str().to_owned())
            .collect();
        filters.sort();
        filters.dedup();
        filters
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
    fn subscriptions_are_distinct() {
        let a = filters(&["x/#", "y"]);
        let b = filters(&["x/#"]);
        let router = Router::new([(0, a.as_slice()), (1, b.as_slice())]);
        assert_eq!(
            router.subscriptions(),
            vec!["x/#".to_owned(), "y".to_owned()]
        );
    }
}
