//! Replies to one management command, on `edgewise/<gateway>/reply/<id>` and, for an MQTT 5
//! request, on its response topic with its correlation data.
//!
//! A [`Replier`] is made by the command check ([`super::commands`]) once it knows where an
//! answer may go, and travels with the command: to the manager, and with a hot swap to the
//! plugin's thread, which tells its progress through it ([`Progress`]). It remembers its last
//! reply, so a duplicate of the command is answered the same again.

use std::sync::{Arc, Mutex};

use edgewise_signing::namespace;
use rumqttc::QoS;
use serde_json::{Value, json};

use crate::mqtt::{Link, Response};
use crate::worker::thread::Progress;

/// Replies to one command, and remembers the last one for duplicates.
#[derive(Clone)]
pub struct Replier {
    link: Arc<Link>,
    topic: String,
    id: String,
    last: Arc<Mutex<Value>>,
    /// An MQTT 5 request's response topic and correlation data, answered as well.
    response: Option<Response>,
}

impl Replier {
    /// Replies as `id` on `edgewise/<gateway>/reply/<id>`.
    pub fn new(link: Arc<Link>, gateway: &str, id: &str) -> Self {
        Self {
            link,
            topic: namespace::reply(gateway, id),
            id: id.to_owned(),
            last: Arc::default(),
            response: None,
        }
    }

    /// Publishes `{"id", "state", ...extra}` on the command's reply topic, at QoS 1.
    pub fn send(&self, state: &str, extra: Value) {
        let mut reply = json!({ "id": self.id, "state": state });
        if let (Some(reply), Value::Object(extra)) = (reply.as_object_mut(), extra) {
            reply.extend(extra);
        }
        tracing::info!(command = self.id, state, "{reply}");
        let (client, _) = self.link.client();
        if let Err(e) = client.try_publish(&self.topic, QoS::AtLeastOnce, false, reply.to_string())
        {
            tracing::warn!(command = self.id, "reply not sent: {e}");
        }
        if let Some(response) = &self.response
            && let Err(e) = client.try_respond(response, reply.to_string().into_bytes())
        {
            tracing::warn!(command = self.id, "response not sent: {e}");
        }
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = reply;
    }

    /// The command's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The same, answering an MQTT 5 request's `response` topic as well.
    pub fn with_response(mut self, response: Option<Response>) -> Self {
        self.response = response;
        self
    }

    /// Its last reply so far, as it will be after every later one.
    pub fn last(&self) -> Arc<Mutex<Value>> {
        self.last.clone()
    }
}

impl Progress for Replier {
    fn send(&self, state: &str, detail: Value) {
        Replier::send(self, state, detail);
    }
}
