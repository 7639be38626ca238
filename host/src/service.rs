//! Talking to the service manager: systemd's `sd_notify` protocol, for a `Type=notify` unit.
//!
//! The gateway says `READY=1` once its plugins are loaded and its event loop runs (the broker
//! may still be away: that is `/readyz`'s business, not the service manager's), pets the
//! watchdog from that event loop, so a gateway task that stops turning is restarted, and says
//! `STOPPING=1` when it shuts down. Outside systemd (`NOTIFY_SOCKET` unset) every call does
//! nothing. The protocol is one datagram a message to the socket systemd names; it is small
//! enough to speak here without a library.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The service manager, if one asked to be told.
#[derive(Debug, Default)]
pub struct ServiceManager {
    socket: Option<(UnixDatagram, Destination)>,
    watchdog: Option<Duration>,
    last_pet: Option<Instant>,
}

#[derive(Debug)]
enum Destination {
    Path(std::path::PathBuf),
    #[cfg(target_os = "linux")]
    Abstract(Vec<u8>),
}

impl ServiceManager {
    /// The manager `NOTIFY_SOCKET` names, with the watchdog interval `WATCHDOG_USEC` asks for
    /// (when `WATCHDOG_PID`, if set, is this process).
    pub fn from_env() -> Self {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Self::default();
        };
        let destination = match name.as_encoded_bytes() {
            #[cfg(target_os = "linux")]
            [b'@', rest @ ..] => Destination::Abstract(rest.to_vec()),
            _ => Destination::Path(name.into()),
        };
        let for_us =
            std::env::var("WATCHDOG_PID").map_or(true, |pid| pid == std::process::id().to_string());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|usec| usec.parse::<u64>().ok())
            .filter(|usec| *usec > 0 && for_us)
            .map(Duration::from_micros);
        match UnixDatagram::unbound() {
            Ok(socket) => Self {
                socket: Some((socket, destination)),
                watchdog,
                last_pet: None,
            },
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET is set, but no socket to tell it with: {e}");
                Self::default()
            }
        }
    }

    /// Whether a service manager listens.
    pub fn is_listening(&self) -> bool {
        self.socket.is_some()
    }

    /// Startup is done: the gateway serves (with `status`, a line for `systemctl status`).
    pub fn ready(&mut self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}"));
        self.last_pet = Some(Instant::now());
    }

    /// Pets the watchdog if half its interval has passed since the last time; called from
    /// the gateway's event loop, so a loop that stops turning stops the petting.
    pub fn keep_alive(&mut self) {
        let Some(interval) = self.watchdog else {
            return;
        };
        if self.last_pet.is_none_or(|at| at.elapsed() >= interval / 2) {
            self.send("WATCHDOG=1");
            self.last_pet = Some(Instant::now());
        }
    }

    /// A new line for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&format!("STATUS={status}"));
    }

    /// Shutdown has begun.
    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=stopping");
    }

    fn send(&self, message: &str) {
        let Some((socket, destination)) = &self.socket else {
            return;
        };
        let sent = match destination {
            Destination::Path(path) => socket.send_to(message.as_bytes(), path),
            #[cfg(target_os = "linux")]
            Destination::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|addr| socket.send_to_addr(message.as_bytes(), &addr))
            }
        };
        if let Err(e) = sent {
            tracing::warn!(
                "telling the service manager `{}`: {e}",
                message.replace('\n', " ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_watchdog_and_stopping_reach_the_socket_named() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("{e}"));
        let unbound = UnixDatagram::unbound().unwrap_or_else(|e| panic!("{e}"));
        let mut manager = ServiceManager {
            socket: Some((unbound, Destination::Path(path))),
            watchdog: Some(Duration::ZERO),
            last_pet: None,
        };
        manager.ready("3 plugins");
        manager.keep_alive();
        manager.stopping();
        let mut buf = [0u8; 256];
        let mut said = Vec::new();
        for _ in 0..3 {
            let n = listener.recv(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            said.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(
            said,
            [
                "READY=1\nSTATUS=3 plugins",
                "WATCHDOG=1",
                "STOPPING=1\nSTATUS=stopping"
            ]
        );
    }

    #[test]
    fn without_a_service_manager_nothing_is_sent_and_nothing_fails() {
        let mut manager = ServiceManager::default();
        manager.ready("x");
        manager.keep_alive();
        assert!(!manager.is_listening());
    }
}
