//! The gateway's local journal: every accepted inbound message, per plugin, until that plugin
//! has handled it, and every output until the broker has it. One redb file, written only by
//! the gateway task, in group commits.
//!
//! Sits between the broker and the plugins (Azure IoT Edge's edgeHub store and Greengrass's
//! stream manager do the same): an inbound message is acknowledged to the broker only once it
//! is here, and acknowledgements then go out in arrival order, as MQTT requires, however slow
//! any one plugin is. Each plugin consumes its own backlog (its cursor is the keys it still
//! has); a plugin that is done with a message removes its key and adds what it published in
//! the same transaction, so a message is either still to be handled or its outputs are kept:
//! after a SIGKILL or a power loss, every backlog and every unsent output is still here.
//!
//! Owns one file. Never touches the network, never calls a plugin.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

/// `(plugin, seq)` → `(topic, payload, received_at_ms, hops)`: a message a plugin still has to
/// handle. A message routed to two plugins is kept twice: removing one plugin's copy never
/// touches the other's.
const PENDING: TableDefinition<PendingKey, PendingValue> = TableDefinition::new("pending");

/// `(plugin, seq)`.
type PendingKey = (&'static str, u64);
/// `(topic, payload, received_at_ms, hops)`.
type PendingValue = (&'static str, &'static [u8], u64, u8);

/// `key` → `(plugin, topic, payload, qos)`: an output not yet acknowledged by the broker.
const OUTBOX: TableDefinition<u64, (&str, &str, &[u8], u8)> = TableDefinition::new("outbox");

/// The topic filters the gateway's broker session is subscribed to: the session outlives the
/// process, so the next one unsubscribes from what it no longer wants.
const SUBSCRIBED: TableDefinition<&str, ()> = TableDefinition::new("subscribed");

/// redb's page cache. Its default, 1 GiB, is more than a Pi-class gateway has to spare; the
/// journal is read back mostly right after it was written.
const CACHE_BYTES: usize = 16 << 20;

/// What the journal counts for each entry beyond its topic and payload.
const ENTRY_OVERHEAD: u64 = 48;

/// With fsync off, how often a commit is made durable all the same (redb also frees pages only
/// then).
const SYNC_EVERY: Duration = Duration::from_secs(1);

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be opened, read or written.
    #[error("journal {}: {source}", path.display())]
    Storage {
        /// The journal file.
        path: PathBuf,
        /// redb's account.
        source: Box<redb::Error>,
    },
}

/// A `Result` with a [`JournalError`].
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

/// One inbound message as a plugin's backlog keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Its position in arrival order, the same for every plugin it went to.
    pub seq: u64,
    /// Its topic.
    pub topic: String,
    /// Its payload, shared (not copied) between the batch, the plugins' mailboxes and the
    /// broker's read buffer it came in.
    pub payload: Bytes,
    /// When the gateway received it.
    pub received_at_ms: u64,
    /// Plugins its chain of messages has passed through before.
    pub hops: u8,
}

impl Entry {
    fn bytes(&self) -> u64 {
        stored_bytes(&self.topic, &self.payload)
    }
}

/// What a message or an output of `topic` and `payload` counts for in the journal.
pub fn stored_bytes(topic: &str, payload: &[u8]) -> u64 {
    (topic.len() + payload.len()) as u64 + ENTRY_OVERHEAD
}

/// An output waiting for the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Its place in the outbox: outputs go out in this order.
    pub key: u64,
    /// The plugin that published it.
    pub plugin: String,
    /// Where it goes.
    pub topic: String,
    /// What it says.
    pub payload: Vec<u8>,
    /// The QoS to publish it with.
    pub qos: u8,
}

impl Output {
    /// What it counts for in the journal.
    pub fn bytes(&self) -> u64 {
        stored_bytes(&self.topic, &self.payload)
    }
}

/// What the journal held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Each plugin's backlog, in arrival order.
    pub backlogs: BTreeMap<String, Vec<u64>>,
    /// The outputs not yet acknowledged, in order.
    pub outbox: Vec<Output>,
    /// The filters the broker session was last subscribed to.
    pub subscribed: BTreeSet<String>,
}

/// Everything one group commit writes.
#[derive(Debug, Default)]
pub struct Batch {
    /// New messages, each with the plugins it goes to.
    pub arrived: Vec<(Entry, Vec<String>)>,
    /// Messages plugins are done with, by plugin and seq.
    pub done: Vec<(String, u64)>,
    /// Outputs to keep, by plugin: topic, payload, QoS.
    pub outputs: Vec<(String, String, Vec<u8>, u8)>,
    /// Outputs the broker acknowledged.
    pub delivered: Vec<u64>,
    /// Outputs dropped unsent by the outbox's overflow policy.
    pub dropped: Vec<u64>,
}

impl Batch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.arrived.is_empty()
            && self.done.is_empty()
            && self.outputs.is_empty()
            && self.delivered.is_empty()
            && self.dropped.is_empty()
    }
}

/// The open journal.
pub struct Journal {
    path: PathBuf,
    db: Database,
    fsync: bool,
    next_seq: u64,
    next_key: u64,
    /// What the backlogs hold.
    backlog_bytes: u64,
    /// What the outbox holds.
    outbox_bytes: u64,
    max_bytes: u64,
    last_sync: Instant,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, holding at most `max_bytes`; with `fsync`
    /// every commit that accepts messages is on disk before it returns, without, at least one
    /// commit a second is.
    pub fn open(path: &Path, max_bytes: u64, fsync: bool) -> Result<(Journal, Recovered)> {
        let fail = |e: redb::Error| JournalError::Storage {
            path: path.to_owned(),
            source: Box::new(e),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(e.into()))?;
        }
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| fail(e.into()))?;
        Self::over(db, path, max_bytes, fsync)
    }

    /// The journal in `db` (opened from `path`, which errors name).
    fn over(
        db: Database,
        path: &Path,
        max_bytes: u64,
        fsync: bool,
    ) -> Result<(Journal, Recovered)> {
        let fail = |e: redb::Error| JournalError::Storage {
            path: path.to_owned(),
            source: Box::new(e),
        };
        let mut recovered = Recovered::default();
        let (mut backlog_bytes, mut outbox_bytes) = (0, 0);
        let (mut next_seq, mut next_key) = (0, 0);
        {
            let txn = db.begin_write().map_err(|e| fail(e.into()))?;
            {
                let pending = txn.open_table(PENDING).map_err(|e| fail(e.into()))?;
                for row in pending.iter().map_err(|e| fail(e.into()))? {
                    let (key, value) = row.map_err(|e| fail(e.into()))?;
                    let ((plugin, seq), (topic, payload, _, _)) = (key.value(), value.value());
                    backlog_bytes += stored_bytes(topic, payload);
                    next_seq = next_seq.max(seq + 1);
                    recovered
                        .backlogs
                        .entry(plugin.to_owned())
                        .or_default()
                        .push(seq);
                }
                let outbox = txn.open_table(OUTBOX).map_err(|e| fail(e.into()))?;
                for row in outbox.iter().map_err(|e| fail(e.into()))? {
                    let (key, value) = row.map_err(|e| fail(e.into()))?;
                    let (plugin, topic, payload, qos) = value.value();
                    let output = Output {
                        key: key.value(),
                        plugin: plugin.to_owned(),
                        topic: topic.to_owned(),
                        payload: payload.to_vec(),
                        qos,
                    };
                    outbox_bytes += output.bytes();
                    next_key = next_key.max(output.key + 1);
                    recovered.outbox.push(output);
                }
                let subscribed = txn.open_table(SUBSCRIBED).map_err(|e| fail(e.into()))?;
                for row in subscribed.iter().map_err(|e| fail(e.into()))? {
                    let (filter, _) = row.map_err(|e| fail(e.into()))?;
                    recovered.subscribed.insert(filter.value().to_owned());
                }
            }
            txn.commit().map_err(|e| fail(e.into()))?;
        }
        for backlog in recovered.backlogs.values_mut() {
            backlog.sort_unstable();
        }
        let journal = Journal {
            path: path.to_owned(),
            db,
            fsync,
            next_seq,
            next_key,
            backlog_bytes,
            outbox_bytes,
            max_bytes,
            last_sync: Instant::now(),
        };
        Ok((journal, recovered))
    }

    fn fail(&self, e: impl Into<redb::Error>) -> JournalError {
        JournalError::Storage {
            path: self.path.clone(),
            source: Box::new(e.into()),
        }
    }

    /// The seq the next arriving message gets.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// What the journal holds, in bytes (approximately: topics, payloads and a fixed overhead).
    pub fn bytes(&self) -> u64 {
        self.backlog_bytes + self.outbox_bytes
    }

    /// What the plugins' backlogs hold, in bytes.
    pub fn backlog_bytes(&self) -> u64 {
        self.backlog_bytes
    }

    /// What the outputs waiting for the broker hold, in bytes.
    pub fn outbox_bytes(&self) -> u64 {
        self.outbox_bytes
    }

    /// Whether it holds as much as it may: no more messages should be taken in.
    pub fn is_full(&self) -> bool {
        self.bytes() >= self.max_bytes
    }

    /// Writes `batch` in one transaction and returns the outputs it kept, with their keys.
    /// A batch that accepts messages is durable when this returns (with fsync on).
    pub fn commit(&mut self, batch: Batch) -> Result<Vec<Output>> {
        let mut txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        // Accepted messages are acknowledged to the broker right after this: with fsync they
        // must be on disk first. What plugins did is only ever redone if lost, so it waits for
        // the next durable commit.
        let must = self.fsync && !batch.arrived.is_empty();
        let sync = must || self.last_sync.elapsed() >= SYNC_EVERY;
        let durability = if sync {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability).map_err(|e| self.fail(e))?;
        let mut kept = Vec::with_capacity(batch.outputs.len());
        let (mut added, mut removed) = (0u64, 0u64);
        let (mut sent_out, mut gone_out) = (0u64, 0u64);
        {
            let mut pending = txn.open_table(PENDING).map_err(|e| self.fail(e))?;
            for (entry, plugins) in &batch.arrived {
                let value = (
                    entry.topic.as_str(),
                    entry.payload.as_ref(),
                    entry.received_at_ms,
                    entry.hops,
                );
                for plugin in plugins {
                    pending
                        .insert((plugin.as_str(), entry.seq), value)
                        .map_err(|e| self.fail(e))?;
                    added += entry.bytes();
                }
            }
            for (plugin, seq) in &batch.done {
                if let Some(old) = pending
                    .remove((plugin.as_str(), *seq))
                    .map_err(|e| self.fail(e))?
                {
                    let (topic, payload, _, _) = old.value();
                    removed += stored_bytes(topic, payload);
                }
            }
            let mut outbox = txn.open_table(OUTBOX).map_err(|e| self.fail(e))?;
            for (plugin, topic, payload, qos) in batch.outputs {
                let output = Output {
                    key: self.next_key,
                    plugin,
                    topic,
                    payload,
                    qos,
                };
                self.next_key += 1;
                outbox
                    .insert(
                        output.key,
                        (
                            output.plugin.as_str(),
                            output.topic.as_str(),
                            output.payload.as_slice(),
                            output.qos,
                        ),
                    )
                    .map_err(|e| self.fail(e))?;
                sent_out += output.bytes();
                kept.push(output);
            }
            for key in batch.delivered.iter().chain(&batch.dropped) {
                if let Some(old) = outbox.remove(*key).map_err(|e| self.fail(e))? {
                    let (_, topic, payload, _) = old.value();
                    gone_out += stored_bytes(topic, payload);
                }
            }
        }
        txn.commit().map_err(|e| self.fail(e))?;
        if sync {
            self.last_sync = Instant::now();
        }
        self.backlog_bytes = (self.backlog_bytes + added).saturating_sub(removed);
        self.outbox_bytes = (self.outbox_bytes + sent_out).saturating_sub(gone_out);
        Ok(kept)
    }

    /// Records that the broker session is subscribed to `filters`, and no others.
    pub fn record_subscriptions(&mut self, filters: &BTreeSet<String>) -> Result<()> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        {
            let mut table = txn.open_table(SUBSCRIBED).map_err(|e| self.fail(e))?;
            table.retain(|_, ()| false).map_err(|e| self.fail(e))?;
            for filter in filters {
                table
                    .insert(filter.as_str(), ())
                    .map_err(|e| self.fail(e))?;
            }
        }
        txn.commit().map_err(|e| self.fail(e))
    }

    /// Reads back plugin `plugin`'s entries `seqs` (those still there, in order).
    pub fn read(&self, plugin: &str, seqs: &[u64]) -> Result<Vec<Entry>> {
        let txn = self.db.begin_read().map_err(|e| self.fail(e))?;
        let pending = txn.open_table(PENDING).map_err(|e| self.fail(e))?;
        let mut entries = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(value) = pending.get((plugin, seq)).map_err(|e| self.fail(e))? {
                let (topic, payload, received_at_ms, hops) = value.value();
                entries.push(Entry {
                    seq,
                    topic: topic.to_owned(),
                    payload: Bytes::copy_from_slice(payload),
                    received_at_ms,
                    hops,
                });
            }
        }
        Ok(entries)
    }

    /// Forgets plugin `plugin`'s whole backlog (it was removed, or is gone); returns how many
    /// messages that was.
    pub fn forget(&mut self, plugin: &str) -> Result<usize> {
        let txn = self.db.begin_write().map_err(|e| self.fail(e))?;
        let mut count = 0;
        let mut removed = 0u64;
        {
            let mut pending = txn.open_table(PENDING).map_err(|e| self.fail(e))?;
            pending
                .retain_in(
                    (plugin, 0)..=(plugin, u64::MAX),
                    |_, (topic, payload, _, _)| {
                        count += 1;
                        removed += stored_bytes(topic, payload);
                        false
                    },
                )
                .map_err(|e| self.fail(e))?;
        }
        txn.commit().map_err(|e| self.fail(e))?;
        self.backlog_bytes = self.backlog_bytes.saturating_sub(removed);
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex, MutexGuard};

    use redb::{BackendError, StorageBackend};

    use super::*;

    fn entry(journal: &mut Journal, topic: &str, payload: &str) -> Entry {
        Entry {
            seq: journal.next_seq(),
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload.as_bytes()),
            received_at_ms: 7,
            hops: 0,
        }
    }

    fn open(dir: &Path) -> (Journal, Recovered) {
        Journal::open(&dir.join("journal.redb"), 1 << 20, true).expect("journal opens")
    }

    #[test]
    fn backlogs_and_outputs_survive_a_reopen_and_a_done_message_is_gone() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (mut j, recovered) = open(dir.path());
        assert!(recovered.backlogs.is_empty() && recovered.outbox.is_empty());
        let a = entry(&mut j, "sensors/a", "1");
        let b = entry(&mut j, "sensors/b", "2");
        j.commit(Batch {
            arrived: vec![
                (a.clone(), vec!["p".into(), "q".into()]),
                (b.clone(), vec!["p".into()]),
            ],
            ..Batch::default()
        })
        .expect("commit");
        let kept = j
            .commit(Batch {
                done: vec![("p".into(), a.seq)],
                outputs: vec![("p".into(), "alerts/a".into(), b"hot".to_vec(), 1)],
                ..Batch::default()
            })
            .expect("commit");
        assert_eq!(kept.len(), 1);
        drop(j);

        let (mut j, recovered) = open(dir.path());
        assert_eq!(recovered.backlogs["p"], vec![b.seq]);
        assert_eq!(recovered.backlogs["q"], vec![a.seq]);
        assert_eq!(recovered.outbox, kept);
        assert_eq!(j.read("q", &[a.seq]).expect("read"), vec![a.clone()]);
        assert!(j.read("p", &[a.seq]).expect("read").is_empty());
        assert!(j.next_seq() > b.seq, "seqs keep growing after a reopen");
    }

    #[test]
    fn delivered_outputs_and_forgotten_plugins_give_their_bytes_back() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (mut j, _) = open(dir.path());
        let a = entry(&mut j, "sensors/a", &"x".repeat(1000));
        j.commit(Batch {
            arrived: vec![(a, vec!["p".into()])],
            ..Batch::default()
        })
        .expect("commit");
        let kept = j
            .commit(Batch {
                outputs: vec![("p".into(), "out".into(), vec![0; 500], 0)],
                ..Batch::default()
            })
            .expect("commit");
        assert!(j.bytes() > 1500);
        assert_eq!(j.forget("p").expect("forget"), 1);
        j.commit(Batch {
            delivered: vec![kept[0].key],
            ..Batch::default()
        })
        .expect("commit");
        assert_eq!(j.bytes(), 0);
        drop(j);
        let (_, recovered) = open(dir.path());
        assert!(recovered.backlogs.is_empty() && recovered.outbox.is_empty());
    }

    /// A disk that can lose power. Reads see every write; a sync makes what was written
    /// survive. At a power cut, what was written since the last sync reaches the platters or
    /// not, write by write and in any order, and a write that does may be torn at a 512-byte
    /// sector; the file keeps its synced length or its new one. A fuse cuts the power after a
    /// number of writes and syncs, in the middle of a commit as often as not.
    #[derive(Debug, Clone, Default)]
    struct Disk(Arc<Mutex<Platters>>);

    #[derive(Debug, Default)]
    struct Platters {
        cache: Vec<u8>,
        synced: Vec<u8>,
        unsynced: Vec<(u64, Vec<u8>)>,
        fuse: Option<u64>,
        dead: bool,
    }

    const SECTOR: usize = 512;

    impl Disk {
        fn operate(&self) -> std::result::Result<MutexGuard<'_, Platters>, BackendError> {
            let mut p = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match p.fuse {
                Some(0) => p.dead = true,
                Some(left) => p.fuse = Some(left - 1),
                None => {}
            }
            match p.dead {
                true => Err(BackendError::Io(std::io::Error::other("power cut"))),
                false => Ok(p),
            }
        }

        fn cut_after(&self, operations: u64) {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).fuse = Some(operations);
        }

        /// What is on the platters after the power went: a new disk holding it.
        fn after_power_cut(&self, dice: &mut Dice) -> Disk {
            let p = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let len = match dice.below(2) {
                0 => p.synced.len(),
                _ => p.cache.len(),
            };
            let mut image = p.synced.clone();
            image.resize(len, 0);
            for (offset, data) in &p.unsynced {
                if dice.below(2) == 0 {
                    continue;
                }
                let sectors = data.len().div_ceil(SECTOR) as u64;
                let kept = match dice.below(4) {
                    0 => (dice.below(sectors + 1) as usize * SECTOR).min(data.len()),
                    _ => data.len(),
                };
                let start = (*offset as usize).min(len);
                let end = (*offset as usize + kept).min(len);
                image[start..end].copy_from_slice(&data[..end - start]);
            }
            Disk(Arc::new(Mutex::new(Platters {
                cache: image.clone(),
                synced: image,
                ..Platters::default()
            })))
        }
    }

    impl StorageBackend for Disk {
        fn len(&self) -> std::result::Result<u64, BackendError> {
            Ok(self.0.lock().unwrap_or_else(|e| e.into_inner()).cache.len() as u64)
        }

        fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), BackendError> {
            let p = self.0.lock().unwrap_or_else(|e| e.into_inner());
            let range = offset as usize..offset as usize + out.len();
            let bytes = p
                .cache
                .get(range)
                .ok_or(BackendError::Io(std::io::Error::other("read past the end")))?;
            out.copy_from_slice(bytes);
            Ok(())
        }

        fn set_len(&self, len: u64) -> std::result::Result<(), BackendError> {
            self.operate()?.cache.resize(len as usize, 0);
            Ok(())
        }

        fn sync_data(&self) -> std::result::Result<(), BackendError> {
            let mut p = self.operate()?;
            // The platters now hold what the cache does: the writes since the last sync, at
            // the cache's length.
            let Platters {
                cache,
                synced,
                unsynced,
                ..
            } = &mut *p;
            let reach = unsynced
                .iter()
                .map(|(o, d)| *o as usize + d.len())
                .max()
                .unwrap_or(0);
            synced.resize(synced.len().max(cache.len()).max(reach), 0);
            for (offset, data) in unsynced.drain(..) {
                synced[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
            }
            synced.truncate(cache.len());
            Ok(())
        }

        fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), BackendError> {
            let mut p = self.operate()?;
            let end = offset as usize + data.len();
            if p.cache.len() < end {
                return Err(BackendError::Io(std::io::Error::other(
                    "write past the end",
                )));
            }
            p.cache[offset as usize..end].copy_from_slice(data);
            p.unsynced.push((offset, data.to_vec()));
            Ok(())
        }
    }

    /// xorshift: reproducible from the seed a failure prints.
    struct Dice(u64);

    impl Dice {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n.max(1)
        }
    }

    fn open_on(disk: Disk) -> Result<(Journal, Recovered)> {
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create_with_backend(disk)
            .map_err(|e| JournalError::Storage {
                path: "disk".into(),
                source: Box::new(e.into()),
            })?;
        Journal::over(db, Path::new("disk"), 1 << 30, true)
    }

    /// The gateway's use of the journal, with a power cut at a random write or sync, within a
    /// group commit as often as between two: after it the journal opens, and every message
    /// that was acknowledged to the broker is still to be handled by each of its plugins, or
    /// its output is kept, or the broker had that output. Work done after the last durable
    /// commit may come back (at least once), never go missing.
    #[test]
    fn a_power_cut_in_the_middle_of_a_group_commit_loses_no_acknowledged_message_and_no_output() {
        for seed in 1..=300u64 {
            let mut dice = Dice(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let disk = Disk::default();
            let (mut j, _) = open_on(disk.clone()).expect("a new journal opens");
            disk.cut_after(20 + dice.below(600));
            // What the broker was told, and what it has.
            let mut acknowledged: Vec<(String, u64)> = Vec::new();
            let mut pending: Vec<(String, u64)> = Vec::new();
            let mut unsent: Vec<Output> = Vec::new();
            let mut delivered: BTreeSet<Vec<u8>> = BTreeSet::new();
            for _ in 0..400 {
                let outcome = match dice.below(3) {
                    0 => {
                        let mut batch = Batch::default();
                        for _ in 0..1 + dice.below(8) {
                            let e =
                                entry(&mut j, "sensors/t", &"x".repeat(dice.below(3000) as usize));
                            let plugins: Vec<String> = match dice.below(3) {
                                0 => vec!["p".into()],
                                1 => vec!["q".into()],
                                _ => vec!["p".into(), "q".into()],
                            };
                            batch.arrived.push((e, plugins));
                        }
                        let arrived: Vec<(String, u64)> = batch
                            .arrived
                            .iter()
                            .flat_map(|(e, ps)| ps.iter().map(|p| (p.clone(), e.seq)))
                            .collect();
                        j.commit(batch).map(|_| {
                            // Durable: acknowledged to the broker now.
                            acknowledged.extend(arrived.iter().cloned());
                            pending.extend(arrived);
                        })
                    }
                    1 if !pending.is_empty() => {
                        let (plugin, seq) =
                            pending.remove(dice.below(pending.len() as u64) as usize);
                        let out = format!("out-{plugin}-{seq}");
                        let batch = Batch {
                            done: vec![(plugin.clone(), seq)],
                            outputs: vec![(plugin, "alerts".into(), out.into_bytes(), 1)],
                            ..Batch::default()
                        };
                        j.commit(batch).map(|kept| unsent.extend(kept))
                    }
                    _ if !unsent.is_empty() => {
                        let output = unsent.remove(0);
                        // The broker has it once it acknowledges, whether or not the removal
                        // below survives.
                        delivered.insert(output.payload.clone());
                        let batch = Batch {
                            delivered: vec![output.key],
                            ..Batch::default()
                        };
                        j.commit(batch).map(drop)
                    }
                    _ => Ok(()),
                };
                if outcome.is_err() {
                    break;
                }
            }
            drop(j);
            let platters = disk.after_power_cut(&mut dice);
            let (j, recovered) = open_on(platters).unwrap_or_else(|e| {
                panic!("seed {seed}: the journal does not open after the cut: {e}")
            });
            let kept: BTreeSet<Vec<u8>> =
                recovered.outbox.iter().map(|o| o.payload.clone()).collect();
            for (plugin, seq) in &acknowledged {
                let waiting = recovered
                    .backlogs
                    .get(plugin)
                    .is_some_and(|b| b.contains(seq));
                let out = format!("out-{plugin}-{seq}").into_bytes();
                assert!(
                    waiting || kept.contains(&out) || delivered.contains(&out),
                    "seed {seed}: message {seq} of {plugin} was acknowledged, and is lost"
                );
            }
            // What came back is readable whole.
            for (plugin, seqs) in &recovered.backlogs {
                let entries = j.read(plugin, seqs).expect("read back");
                assert_eq!(entries.len(), seqs.len(), "seed {seed}");
            }
        }
    }

    #[test]
    fn a_journal_at_its_cap_says_it_is_full() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (mut j, _) = Journal::open(&dir.path().join("j.redb"), 2000, false).expect("open");
        let a = entry(&mut j, "t", &"x".repeat(2000));
        assert!(!j.is_full());
        j.commit(Batch {
            arrived: vec![(a, vec!["p".into()])],
            ..Batch::default()
        })
        .expect("commit");
        assert!(j.is_full());
    }
}
