//! The gateway's own MQTT namespace: every topic name Edgewise uses, built here and nowhere
//! else, and the rule that keeps plugins out of it.
//!
//! Everything under `edgewise/` belongs to gateways and their operators (status, commands,
//! replies, dead letters, metrics, fleet desired states, keyring updates, retained bundles), and topics that
//! begin with `$` belong to the broker (`$SYS/...`). A plugin may neither subscribe to nor
//! publish under either, not even through a wildcard that would reach them (`#`, `+/+/cmd`):
//! [`reserved_by`] is checked when a manifest is parsed, so `pack`, `install` and every load
//! refuse such a grant. Lives in `edgewise-signing` because the gateway, the operator tools
//! and an author's CI all need the same names.

use crate::topic::TopicFilter;

/// The first level of every gateway topic.
pub const ROOT: &str = "edgewise";

/// The retained status of gateway `gateway` (also its last will).
pub fn status(gateway: &str) -> String {
    format!("{ROOT}/{gateway}/status")
}

/// The gateway whose status `topic` is, if it is one.
pub fn status_of(topic: &str) -> Option<&str> {
    let id = topic.strip_prefix("edgewise/")?.strip_suffix("/status")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The status of every gateway, for fleet tools.
pub const EVERY_STATUS: &str = "edgewise/+/status";

/// Where gateway `gateway` publishes its metrics text.
pub fn metrics(gateway: &str) -> String {
    format!("{ROOT}/{gateway}/metrics")
}

/// Where signed management commands for gateway `gateway` arrive.
pub fn command(gateway: &str) -> String {
    format!("{ROOT}/{gateway}/cmd")
}

/// Where gateway `gateway` answers command `id`.
pub fn reply(gateway: &str, id: &str) -> String {
    format!("{ROOT}/{gateway}/reply/{id}")
}

/// The prefix of every reply of gateway `gateway`.
pub fn reply_prefix(gateway: &str) -> String {
    format!("{ROOT}/{gateway}/reply/")
}

/// Where gateway `gateway` puts the messages plugin `plugin` failed on.
pub fn dead_letter(gateway: &str, plugin: &str) -> String {
    format!("{ROOT}/{gateway}/dead-letter/{plugin}")
}

/// Where gateway `gateway` publishes, when asked, what the shadow of plugin `plugin`
/// published to `topic` (the candidate's outputs never go to the plugin's own topics).
pub fn shadow_output(gateway: &str, plugin: &str, topic: &str) -> String {
    format!("{ROOT}/{gateway}/shadow/{plugin}/{topic}")
}

/// The signed desired state of fleet group `group`.
pub fn desired(group: &str) -> String {
    format!("{ROOT}/fleet/{group}/desired")
}

/// The signed keyring update retained for every gateway of fleet group `group`.
pub fn group_keyring(group: &str) -> String {
    format!("{ROOT}/fleet/{group}/keyring")
}

/// The signed keyring update retained for gateway `gateway` alone.
pub fn keyring(gateway: &str) -> String {
    format!("{ROOT}/{gateway}/keyring")
}

/// Where root-signed resets of gateway `gateway`'s counters arrive (not retained).
pub fn trust_reset(gateway: &str) -> String {
    format!("{ROOT}/{gateway}/trust-reset")
}

/// Bytes in every chunk of a bundle but the last, which holds the rest (1 byte or more).
pub const BUNDLE_CHUNK_BYTES: usize = 256 << 10;

/// Where chunk `index` (from 0) of the `count` chunks of bundle `digest` is retained.
pub fn bundle_chunk(digest: &str, index: u32, count: u32) -> String {
    format!("{ROOT}/bundles/{digest}/{index}/{count}")
}

/// The filter that receives every chunk of bundle `digest`.
pub fn bundle_chunks(digest: &str) -> String {
    format!("{ROOT}/bundles/{digest}/+/+")
}

/// The number of chunks a bundle of `size` bytes travels in.
pub fn bundle_chunk_count(size: u64) -> u64 {
    size.div_ceil(BUNDLE_CHUNK_BYTES as u64).max(1)
}

/// A chunk topic's digest, index and count, if `topic` is a chunk topic: numbers in decimal
/// without leading zeros, the index below the count.
pub fn parse_bundle_chunk(topic: &str) -> Option<(&str, u32, u32)> {
    let rest = topic.strip_prefix(ROOT)?.strip_prefix("/bundles/")?;
    let mut levels = rest.split('/');
    let (digest, index, count) = (levels.next()?, levels.next()?, levels.next()?);
    let number = |text: &str| {
        let canonical = !text.is_empty() && (text == "0" || !text.starts_with('0'));
        canonical.then(|| text.parse::<u32>().ok()).flatten()
    };
    let (index, count) = (number(index)?, number(count)?);
    (levels.next().is_none() && index < count).then_some((digest, index, count))
}

/// Whether `topic` is a name in the gateway's namespace.
pub fn is_gateway_topic(topic: &str) -> bool {
    topic == ROOT || topic.starts_with("edgewise/")
}

/// A part of the topic space plugins may not reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// `edgewise/#`: gateways' status, commands, replies, dead letters, fleets, bundles.
    Gateway,
    /// Topics beginning with `$`: the broker's (`$SYS/#`).
    Broker,
}

impl std::fmt::Display for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Reserved::Gateway => "`edgewise/#`, the gateway's own topics",
            Reserved::Broker => "`$`-topics, the broker's own (`$SYS/#`)",
        })
    }
}

/// The reserved part of the topic space that `filter` could match a topic in, if any.
///
/// MQTT wildcards at the first level never match `$` topics, so `#` reaches `edgewise/#` but
/// not `$SYS/#`; a filter written with `$` reaches the broker's topics. For a shared
/// subscription the filter after `$share/<group>/` is what counts.
pub fn reserved_by(filter: &TopicFilter) -> Option<Reserved> {
    let inner = match filter.share_group() {
        Some(group) => &filter.as_str()["$share/".len() + group.len() + 1..],
        None => filter.as_str(),
    };
    if inner.starts_with('$') {
        return Some(Reserved::Broker);
    }
    let first = inner.split('/').next().unwrap_or_default();
    matches!(first, "#" | "+" | ROOT).then_some(Reserved::Gateway)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(filter: &str) -> Option<Reserved> {
        reserved_by(&TopicFilter::parse(filter).expect("valid filter"))
    }

    #[test]
    fn chunk_topics_name_a_digest_an_index_and_a_count() {
        let topic = bundle_chunk("ab", 3, 10);
        assert_eq!(topic, "edgewise/bundles/ab/3/10");
        assert_eq!(parse_bundle_chunk(&topic), Some(("ab", 3, 10)));
        for wrong in [
            "edgewise/bundles/ab",
            "edgewise/bundles/ab/10/10",
            "edgewise/bundles/ab/03/10",
            "edgewise/bundles/ab/-1/10",
            "edgewise/bundles/ab/1/10/x",
            "edgewise/bundles/ab/1/",
        ] {
            assert_eq!(parse_bundle_chunk(wrong), None, "{wrong}");
        }
        assert_eq!(bundle_chunk_count(0), 1);
        assert_eq!(bundle_chunk_count(BUNDLE_CHUNK_BYTES as u64), 1);
        assert_eq!(bundle_chunk_count(BUNDLE_CHUNK_BYTES as u64 + 1), 2);
    }

    #[test]
    fn grants_that_reach_the_gateway_topics_are_reserved_even_through_wildcards() {
        for filter in [
            "#",
            "+/+/cmd",
            "+/#",
            "+",
            "edgewise",
            "edgewise/#",
            "edgewise/line-7/dead-letter/x",
            "edgewise/+/status",
            "$share/g/#",
            "$share/g/edgewise/fleet/+/desired",
        ] {
            assert_eq!(reserved(filter), Some(Reserved::Gateway), "{filter}");
        }
    }

    #[test]
    fn broker_topics_are_reserved_and_shared_subscriptions_are_judged_by_their_filter() {
        assert_eq!(reserved("$SYS/#"), Some(Reserved::Broker));
        assert_eq!(
            reserved("$share/g/$SYS/broker/load"),
            Some(Reserved::Broker)
        );
        assert_eq!(reserved("$share/g/sensors/#"), None);
    }

    #[test]
    fn ordinary_grants_are_not_reserved() {
        for filter in [
            "sensors/#",
            "plant/+/vibration",
            "edgewise-app/x",
            "home/edgewise",
        ] {
            assert_eq!(reserved(filter), None, "{filter}");
        }
    }

    #[test]
    fn every_gateway_topic_is_in_the_namespace() {
        for topic in [
            status("gw"),
            metrics("gw"),
            command("gw"),
            reply("gw", "c-1"),
            dead_letter("gw", "p"),
            desired("g"),
            bundle_chunk("ab12", 0, 1),
            trust_reset("gw"),
        ] {
            assert!(is_gateway_topic(&topic), "{topic}");
        }
        assert!(reply("gw", "c-1").starts_with(&reply_prefix("gw")));
        assert_eq!(parse_bundle_chunk("sensors/bundles/ab12/0/1"), None);
        let chunks = TopicFilter::parse(&bundle_chunks("ab12"));
        assert!(chunks.is_ok_and(|f| f.matches(&bundle_chunk("ab12", 2, 3))));
        assert!(!is_gateway_topic("edgewise-app/x"));
        assert!(TopicFilter::parse(EVERY_STATUS).is_ok_and(|f| f.matches(&status("gw"))));
    }
}
