//! The plugin to copy: republishes every message under a prefix, counting as it goes.
//!
//! Shows the whole shape of a plugin: settings read once in `init`, state kept in `self`
//! between messages, a log line, and a publish to a topic the manifest grants.

use edgewise_guest::{Message, Plugin, Result, export_plugin, info, publish, setting};

struct Template {
    prefix: String,
    seen: u64,
}

impl Plugin for Template {
    fn init() -> Result<Self> {
        let prefix = setting("prefix", "echo".to_owned())?;
        info!("republishing under {prefix}/");
        Ok(Template { prefix, seen: 0 })
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        self.seen += 1;
        publish(&format!("{}/{}", self.prefix, msg.topic), &msg.payload)?;
        Ok(())
    }
}

export_plugin!(Template);
