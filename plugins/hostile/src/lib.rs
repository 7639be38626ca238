//! A plugin that misbehaves on request, to prove the sandbox holds.
//!
//! Each message's payload names what to do: `noop`, `echo`, `count` (publish how many messages
//! this instance has seen), `print` (write to stdout), `error` (return an error), `panic`,
//! `loop` (spin forever), `alloc` (allocate without end), `recurse` (recurse without end),
//! `publish-ungranted`, `publish-huge`, `publish-many`, `load-unknown-model`, `load-bytes-onnx`,
//! `load-bytes-tensorflow` (wasi:nn `load` from plugin memory). The setting `init`
//! chooses how `init` behaves: `ok` (default), `error`, `panic`, `loop`; the setting `trap-at`
//! (default 0, never) makes the instance's n-th message trap whatever it says.

use std::hint::black_box;

use edgewise_guest::__bindings::wasi::nn::graph::{self, ExecutionTarget, GraphEncoding};
use edgewise_guest::nn::Model;
use edgewise_guest::{Error, Message, Plugin, Result, config, export_plugin, publish, setting};

struct Hostile {
    seen: u64,
    trap_at: u64,
}

impl Plugin for Hostile {
    fn init() -> Result<Self> {
        match config("init").as_deref().unwrap_or("ok") {
            "ok" => Ok(Hostile {
                seen: 0,
                trap_at: setting("trap-at", 0)?,
            }),
            "error" => Err(Error::msg("refusing to start, as asked")),
            "panic" => panic!("panicking in init, as asked"),
            "loop" => spin(),
            other => Err(Error::msg(format!("unknown init mode {other:?}"))),
        }
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        self.seen += 1;
        if self.seen == self.trap_at {
            panic!("trapping on message {}, as asked", self.seen);
        }
        match msg.text()? {
            "noop" => {}
            "echo" => publish("hostile/echo", &msg.payload)?,
            "count" => publish("hostile/count", self.seen.to_string())?,
            "print" => println!("hello from stdout, message {}", self.seen),
            "error" => return Err(Error::msg("this message is not acceptable")),
            "panic" => panic!("panicking on message {}, as asked", self.seen),
            "loop" => spin(),
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    black_box(&hoard);
                }
            }
            "recurse" => {
                black_box(recurse(black_box(0)));
            }
            "publish-ungranted" => publish("not/granted", b"x")?,
            "publish-huge" => publish("hostile/echo", vec![0u8; 2 << 20])?,
            "publish-many" => {
                for i in 0..10_000 {
                    publish("hostile/echo", i.to_string())?;
                }
            }
            "load-unknown-model" => {
                Model::by_name("no-such-model")?;
            }
            // Straight to wasi:nn, past the SDK: models from plugin memory must be refused.
            "load-bytes-onnx" => load_bytes(GraphEncoding::Onnx)?,
            "load-bytes-tensorflow" => load_bytes(GraphEncoding::Tensorflow)?,
            other => return Err(Error::msg(format!("unknown command {other:?}"))),
        }
        Ok(())
    }
}

fn load_bytes(encoding: GraphEncoding) -> Result<()> {
    let model = vec![0u8; 64];
    graph::load(&[model], encoding, ExecutionTarget::Cpu)
        .map(drop)
        .map_err(|e| Error::msg(format!("{:?}: {}", e.code(), e.data())))
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

#[allow(unconditional_recursion, reason = "recursing without end is the point")]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 16]);
    recurse(black_box(frame[3] + 1)) + frame[7]
}

export_plugin!(Hostile);
