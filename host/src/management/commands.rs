//! The check every management command passes before anything is done: signature, gateway,
//! expiry, replay.
//!
//! [`CommandLog::check`] refuses, with a reason, what is retained, malformed, forged (too few
//! operator signatures), for another gateway, or out of its time or sequence bounds
//! ([`Trust::check_command`]); it records the new sequence number on disk before anything is
//! done, and answers a QoS 1 duplicate of an accepted command with its last reply instead of
//! running it twice. It runs on the manager's thread, never on the task that polls MQTT.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use edgewise_signing::command::{Command, safe_id, untrusted_id};
use edgewise_signing::{Keyring, namespace};
use rumqttc::QoS;
use serde_json::{Value, json};

use super::reply::Replier;
use super::trust::Trust;
use crate::mqtt::{Link, Response};

/// How many accepted commands are remembered for answering duplicates.
const REMEMBERED: usize = 64;

/// What the gateway knows of the commands it was sent.
pub struct CommandLog {
    gateway: String,
    response_prefix: String,
    recent: VecDeque<(String, u64, Arc<Mutex<Value>>)>,
}

/// The outcome of checking one command message.
pub enum Checked {
    /// Refused, and answered: nothing else to do.
    Refused,
    /// A duplicate of an accepted command, answered again.
    Duplicate,
    /// Accepted: run it.
    Accepted(Box<Command>, Replier),
}

impl CommandLog {
    /// The log of gateway `gateway`, checking signatures with `keyring`, answering MQTT 5
    /// requests of verified commands on response topics under `response_prefix`.
    pub fn new(gateway: &str, response_prefix: &str) -> Self {
        Self {
            gateway: gateway.to_owned(),
            response_prefix: response_prefix.to_owned(),
            recent: VecDeque::new(),
        }
    }

    /// Checks one message from the command topic, answering refusals and duplicates itself.
    ///
    /// Until the command's signature is verified, anyone may have sent it: its refusal goes
    /// only to the gateway's own reply topic, never to a response topic the sender named
    /// (which would make the gateway publish wherever an attacker likes, under its identity).
    pub fn check(
        &mut self,
        payload: &[u8],
        retained: bool,
        response: Option<Response>,
        link: &Arc<Link>,
        keyring: &Keyring,
        trust: &mut Trust,
    ) -> Checked {
        let replier = |id: &str, response: Option<Response>| {
            Replier::new(link.clone(), &self.gateway, id).with_response(response)
        };
        let refuse_unverified = |id: Option<String>, reason: String| {
            let id = id.unwrap_or_else(|| "invalid".into());
            tracing::warn!(command = id, "command refused: {reason}");
            replier(&id, None).send("refused", json!({ "reason": reason }));
            Checked::Refused
        };
        if retained {
            return refuse_unverified(
                untrusted_id(payload),
                "a retained message is not a command (it would run again at every connection)"
                    .into(),
            );
        }
        let (command, signers) = match Command::verify(payload, keyring) {
            Ok(verified) => verified,
            Err(e) => return refuse_unverified(untrusted_id(payload), e.to_string()),
        };
        if !safe_id(&command.id) {
            return refuse_unverified(
                None,
                "the command id must be 1-64 of letters, digits, `-`, `_` and `.`".into(),
            );
        }
        // The response topic is not signed: even a verified command's may be an attacker's
        // (a replay with the property changed), so it is honoured only under the prefix.
        let response = response.filter(|r| {
            let allowed = r.topic.starts_with(&self.response_prefix)
                && edgewise_signing::topic::validate_name(&r.topic).is_ok();
            if !allowed {
                tracing::warn!(
                    command = command.id,
                    topic = r.topic,
                    "response topic ignored: not under `response-prefix` {}",
                    self.response_prefix
                );
            }
            allowed
        });
        let refuse = |id: Option<String>, reason: String| {
            let id = id.unwrap_or_else(|| "invalid".into());
            tracing::warn!(command = id, "command refused: {reason}");
            replier(&id, response.clone()).send("refused", json!({ "reason": reason }));
            Checked::Refused
        };
        let id = Some(command.id.clone());
        if command.gateway != self.gateway {
            return refuse(
                id,
                format!(
                    "the command is for gateway `{}`, this is `{}`",
                    command.gateway, self.gateway
                ),
            );
        }
        if let Some((_, _, last)) = self
            .recent
            .iter()
            .find(|(i, seq, _)| *i == command.id && *seq == command.seq)
        {
            let last = last.lock().unwrap_or_else(|p| p.into_inner()).clone();
            tracing::info!(
                command = command.id,
                "duplicate of an accepted command: answered again"
            );
            let (client, _) = link.client();
            let topic = namespace::reply(&self.gateway, &command.id);
            let _ = client.try_publish(&topic, QoS::AtLeastOnce, false, last.to_string());
            if let Some(response) = &response {
                let _ = client.try_respond(response, last.to_string().into_bytes());
            }
            return Checked::Duplicate;
        }
        if let Err(reason) = trust.keyring_in_force(keyring) {
            return refuse(id, reason);
        }
        if let Err(reason) = trust.check_command(&command) {
            return refuse(id, reason);
        }
        // The sequence number is on disk before anything is done.
        if let Err(e) = trust.accept_command(&command) {
            return refuse(id, format!("cannot record the sequence number: {e}"));
        }
        let reply = replier(&command.id, response);
        if self.recent.len() == REMEMBERED {
            self.recent.pop_front();
        }
        self.recent
            .push_back((command.id.clone(), command.seq, reply.last()));
        reply.send(
            "received",
            json!({ "action": command.action.name(), "signed-by": signers }),
        );
        Checked::Accepted(Box::new(command), reply)
    }
}
