//! MQTT topic names and filters (MQTT 3.1.1 §4.7, MQTT 5 §4.7).
//!
//! Pure string rules, no I/O: used to validate a manifest's `subscribe` and `publish` lists and,
//! in the gateway, to decide whether a topic is granted. `$share/<group>/<filter>` is accepted
//! as a subscribe filter; matching uses the filter after the group.

use std::fmt;

/// Why a topic name or filter is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// Topics must have at least one character.
    #[error("topic is empty")]
    Empty,
    /// MQTT forbids U+0000 in topics.
    #[error("topic contains a NUL character")]
    Nul,
    /// `+` and `#` are filters' wildcards; a published topic name cannot hold them.
    #[error("topic name contains a wildcard (`+` or `#`)")]
    WildcardInName,
    /// `+` must fill a whole level, `#` must be the whole last level.
    #[error("wildcard `{0}` must fill a whole level (`#` only the last one)")]
    MisplacedWildcard(char),
    /// `$share/<group>/<filter>` needs a group without wildcards and a filter.
    #[error("shared subscription must be `$share/<group>/<filter>`")]
    BadShare,
    /// MQTT limits topics to 65,535 bytes.
    #[error("topic is longer than 65535 bytes")]
    TooLong,
}

fn check_common(s: &str) -> Result<(), TopicError> {
    if s.is_empty() {
        return Err(TopicError::Empty);
    }
    if s.len() > 65_535 {
        return Err(TopicError::TooLong);
    }
    if s.contains('\0') {
        return Err(TopicError::Nul);
    }
    Ok(())
}

/// Checks a topic name that a message is published to.
pub fn validate_name(topic: &str) -> Result<(), TopicError> {
    check_common(topic)?;
    if topic.contains(['+', '#']) {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// A validated MQTT topic filter, possibly a shared subscription.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicFilter {
    raw: String,
    /// Byte offset of the filter proper inside `raw` (after `$share/<group>/`).
    filter_start: usize,
}

impl TopicFilter {
    /// Parses and validates a filter such as `plant/+/vibration` or `$share/g/sensors/#`.
    pub fn parse(raw: &str) -> Result<Self, TopicError> {
        check_common(raw)?;
        let mut filter_start = 0;
        if let Some(rest) = raw.strip_prefix("$share/") {
            let (group, filter) = rest.split_once('/').ok_or(TopicError::BadShare)?;
            if group.is_empty() || group.contains(['+', '#']) || filter.is_empty() {
                return Err(TopicError::BadShare);
            }
            filter_start = raw.len() - filter.len();
        }
        let filter = &raw[filter_start..];
        let levels: Vec<&str> = filter.split('/').collect();
        for (i, level) in levels.iter().enumerate() {
            if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
                return Err(TopicError::MisplacedWildcard('#'));
            }
            if level.contains('+') && *level != "+" {
                return Err(TopicError::MisplacedWildcard('+'));
            }
        }
        Ok(Self {
            raw: raw.to_owned(),
            filter_start,
        })
    }

    /// The filter as written, including any `$share/<group>/` prefix.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The share group, for `$share/<group>/<filter>`.
    pub fn share_group(&self) -> Option<&str> {
        (self.filter_start > 0).then(|| &self.raw["$share/".len()..self.filter_start - 1])
    }

    /// Whether a message published to `topic` matches this filter.
    ///
    /// Follows MQTT: `+` matches one level, `#` the parent level and everything below it, and
    /// wildcards at the start never match topics beginning with `$` (such as `$SYS/...`).
    pub fn matches(&self, topic: &str) -> bool {
        let filter = &self.raw[self.filter_start..];
        if topic.starts_with('$') && filter.starts_with(['+', '#']) {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in filter.split('/') {
            match (level, topic_levels.next()) {
                ("#", _) => return true,
                ("+", Some(_)) => {}
                (l, Some(t)) if l == t => {}
                _ => return false,
            }
        }
        topic_levels.next().is_none()
    }

    /// Whether this filter matches every topic that `other` matches, so that subscribing to
    /// both adds nothing: on a broker that sends one copy of a message per matching
    /// subscription (MQTT 3.1.1 §3.3.5 allows it; rumqttd does), only duplicates. A shared
    /// subscription covers only itself: its messages are split between subscribers.
    pub fn covers(&self, other: &TopicFilter) -> bool {
        if self.filter_start > 0 || other.filter_start > 0 {
            return self == other;
        }
        let (mine, theirs) = (self.raw.as_str(), other.raw.as_str());
        if theirs.starts_with('$') && mine.starts_with(['+', '#']) {
            return false;
        }
        let mut their_levels = theirs.split('/');
        for level in mine.split('/') {
            match (level, their_levels.next()) {
                ("#", _) => return true,
                ("+", Some(t)) if t != "#" => {}
                (l, Some(t)) if l == t => {}
                _ => return false,
            }
        }
        their_levels.next().is_none()
    }

    /// Whether some topic matches both this filter and `other`. Two filters that overlap
    /// without one covering the other bring a broker that copies per subscription to send the
    /// topics they share twice; [`TopicFilter::join`] gives one filter for both. A shared
    /// subscription overlaps only itself (its messages are split between subscribers).
    pub fn overlaps(&self, other: &TopicFilter) -> bool {
        if self.filter_start > 0 || other.filter_start > 0 {
            return self == other;
        }
        let (mine, theirs) = (self.raw.as_str(), other.raw.as_str());
        if mine.starts_with('$') != theirs.starts_with('$')
            && (mine.starts_with(['+', '#']) || theirs.starts_with(['+', '#']))
        {
            // A leading wildcard never matches a `$` topic.
            return false;
        }
        let (mut a, mut b) = (mine.split('/'), theirs.split('/'));
        loop {
            match (a.next(), b.next()) {
                (Some("#"), _) | (_, Some("#")) | (None, None) => return true,
                (Some(x), Some(y)) if x == y || x == "+" || y == "+" => {}
                _ => return false,
            }
        }
    }

    /// The narrowest filter this module can write that covers both this one and `other`: equal
    /// levels kept, differing ones `+`, and `#` from where either has it. `None` for a shared
    /// subscription, which is never joined, or for filters of different depths without a `#`
    /// (they never overlap).
    pub fn join(&self, other: &TopicFilter) -> Option<TopicFilter> {
        if self.filter_start > 0 || other.filter_start > 0 {
            return (self == other).then(|| self.clone());
        }
        let (mut a, mut b) = (self.raw.split('/'), other.raw.split('/'));
        let mut levels = Vec::new();
        loop {
            match (a.next(), b.next()) {
                (None, None) => break,
                (Some("#"), _) | (_, Some("#")) => {
                    levels.push("#");
                    break;
                }
                (Some(x), Some(y)) => levels.push(if x == y { x } else { "+" }),
                _ => return None,
            }
        }
        TopicFilter::parse(&levels.join("/")).ok()
    }
}

impl fmt::Display for TopicFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(s: &str) -> TopicFilter {
        TopicFilter::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn plus_matches_exactly_one_level() {
        assert!(f("a/+/c").matches("a/b/c"));
        assert!(!f("a/+/c").matches("a/b/x/c"));
        assert!(!f("a/+").matches("a"));
        assert!(f("a/+").matches("a/"));
    }

    #[test]
    fn hash_matches_parent_and_all_children() {
        assert!(f("a/#").matches("a"));
        assert!(f("a/#").matches("a/b/c"));
        assert!(!f("a/#").matches("b/a"));
        assert!(f("#").matches("anything/at/all"));
    }

    #[test]
    fn leading_wildcards_skip_dollar_topics() {
        assert!(!f("#").matches("$SYS/broker/uptime"));
        assert!(!f("+/broker").matches("$SYS/broker"));
        assert!(f("$SYS/#").matches("$SYS/broker/uptime"));
    }

    #[test]
    fn a_filter_covers_another_when_it_matches_everything_the_other_does() {
        let f = |s: &str| TopicFilter::parse(s).expect("valid filter");
        let covers = |a: &str, b: &str| f(a).covers(&f(b));
        assert!(covers("sensors/#", "sensors/+/reading"));
        assert!(
            covers("sensors/#", "sensors"),
            "`#` matches its parent level"
        );
        assert!(covers("#", "a/+/c/#"));
        assert!(covers("a/+/c", "a/b/c"));
        assert!(covers("a/+/c", "a/+/c"));
        assert!(!covers("a/+", "a/#"), "`a/#` also matches `a` and `a/b/c`");
        assert!(!covers("sensors/+/reading", "sensors/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/b/c"));
        assert!(
            !covers("#", "$SYS/broker"),
            "leading wildcards skip `$` topics"
        );
        assert!(
            !covers("$share/g/sensors/#", "sensors/x"),
            "a share splits its messages"
        );
        assert!(!covers("sensors/#", "$share/g/sensors/x"));
        assert!(covers("$share/g/sensors/#", "$share/g/sensors/#"));
    }

    #[test]
    fn filters_overlap_when_some_topic_matches_both() {
        let overlap = |a: &str, b: &str| f(a).overlaps(&f(b)) && f(b).overlaps(&f(a));
        assert!(overlap("sensors/+/reading", "sensors/kitchen/+"));
        assert!(overlap("a/b/#", "+/b/c"));
        assert!(overlap("a/#", "a"), "`a/#` matches its parent level");
        assert!(overlap("a/+", "a/b"));
        assert!(!overlap("a/+", "a"));
        assert!(!overlap("a/b", "a/b/c"));
        assert!(!overlap("a/+/c", "a/+/d"));
        assert!(
            !overlap("+/x", "$SYS/x"),
            "a leading wildcard skips `$` topics"
        );
        assert!(overlap("$app/+", "$app/x"));
        assert!(!overlap("$share/g/a/+", "a/b"));
    }

    #[test]
    fn the_join_of_two_filters_covers_both() {
        let join = |a: &str, b: &str| f(a).join(&f(b)).map(|j| j.as_str().to_owned());
        for (a, b, joined) in [
            ("sensors/+/reading", "sensors/kitchen/+", "sensors/+/+"),
            ("a/b/#", "+/b/c", "+/b/#"),
            ("a/#", "a", "a/#"),
            ("a/b/c", "a/x/c", "a/+/c"),
        ] {
            assert_eq!(join(a, b).as_deref(), Some(joined), "{a} ∨ {b}");
            assert!(f(joined).covers(&f(a)) && f(joined).covers(&f(b)));
        }
        assert_eq!(join("a/b", "a/b/c"), None);
        assert_eq!(join("$share/g/a", "a"), None);
    }

    #[test]
    fn shared_subscription_matches_on_its_filter() {
        let s = f("$share/line1/plant/+/temp");
        assert_eq!(s.share_group(), Some("line1"));
        assert!(s.matches("plant/a/temp"));
        assert!(!s.matches("$share/line1/plant/a/temp"));
    }

    #[test]
    fn misplaced_wildcards_are_rejected() {
        assert_eq!(
            TopicFilter::parse("a/#/b"),
            Err(TopicError::MisplacedWildcard('#'))
        );
        assert_eq!(
            TopicFilter::parse("a/b#"),
            Err(TopicError::MisplacedWildcard('#'))
        );
        assert_eq!(
            TopicFilter::parse("a/b+/c"),
            Err(TopicError::MisplacedWildcard('+'))
        );
        assert_eq!(TopicFilter::parse("$share/g"), Err(TopicError::BadShare));
        assert_eq!(TopicFilter::parse(""), Err(TopicError::Empty));
    }

    #[test]
    fn topic_names_reject_wildcards_and_nul() {
        assert_eq!(validate_name("a/+"), Err(TopicError::WildcardInName));
        assert_eq!(validate_name("a\0b"), Err(TopicError::Nul));
        assert_eq!(validate_name("plant/line-1/alert"), Ok(()));
    }
}
