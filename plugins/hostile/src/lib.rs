//! A plugin that misbehaves on request, to prove the sandbox holds.
//!
//! Each message's payload names what to do: `noop`, `echo`, `count` (publish how many messages
//! this instance has seen), `print` (write to stdout), `error` (return an error), `panic`,
//! `loop` (spin forever), `alloc` (allocate without end), `recurse` (recurse without end),
//! `publish-ungranted`, `publish-huge`, `publish-many`, `load-unknown-model`, `load-bytes-onnx`,
//! `load-bytes-tensorflow` (wasi:nn `load` from plugin memory), and what the host does for it:
//! `sleep` (a blocking WASI sleep of an hour), `keep-tensors` (create 4 MiB wasi-nn tensors and
//! never drop them), `keep-outputs` (compute the `square` model and never drop its outputs),
//! `compute-loop` (compute without end), `huge-shape` (a tensor whose shape claims terabytes),
//! `log-flood` (20,000 log lines), `log-giant` (one 4 MiB line), `log-forge` (a line with a
//! newline and a terminal escape in it), `refused-flood` (publish where it may not, without
//! end, ignoring the refusals), `forward` (publish the message as it is to the topic in the
//! setting `forward-to`, by default `hostile/in/loop`, which its own subscription matches).
//!
//! The setting `init` chooses how `init` behaves: `ok` (default), `error`, `panic`, `loop`,
//! `print`, `sleep`; the setting `trap-at` (default 0, never) makes the instance's n-th message
//! trap whatever it says, and `trap-every` (default 0, never) every n-th.

use std::hint::black_box;

use std::time::Duration;

use edgewise_guest::__bindings::wasi::nn::graph::{self, ExecutionTarget, GraphEncoding};
use edgewise_guest::__bindings::wasi::nn::tensor::{Tensor, TensorType};
use edgewise_guest::nn::Model;
use edgewise_guest::{Error, Message, Plugin, Result, config, export_plugin, publish, setting};

struct Hostile {
    seen: u64,
    trap_at: u64,
    trap_every: u64,
}

impl Plugin for Hostile {
    fn init() -> Result<Self> {
        match config("init").as_deref().unwrap_or("ok") {
            "ok" => Ok(Hostile {
                seen: 0,
                trap_at: setting("trap-at", 0)?,
                trap_every: setting("trap-every", 0)?,
            }),
            "error" => Err(Error::msg("refusing to start, as asked")),
            "panic" => panic!("panicking in init, as asked"),
            "loop" => spin(),
            "print" => {
                println!("printing in init, as asked");
                eprintln!("and on stderr");
                Err(Error::msg("printed, then refusing to start"))
            }
            "sleep" => {
                std::thread::sleep(Duration::from_secs(3600));
                Err(Error::msg("slept an hour in init"))
            }
            other => Err(Error::msg(format!("unknown init mode {other:?}"))),
        }
    }

    fn on_message(&mut self, msg: Message) -> Result<()> {
        self.seen += 1;
        if self.seen == self.trap_at
            || (self.trap_every > 0 && self.seen.is_multiple_of(self.trap_every))
        {
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
            "sleep" => std::thread::sleep(Duration::from_secs(3600)),
            "keep-tensors" => loop {
                let data = vec![0u8; 4 << 20];
                std::mem::forget(Tensor::new(&[1 << 20], TensorType::Fp32, &data));
            },
            "keep-outputs" => {
                let mut model = Model::by_name("square")?;
                let input = vec![0f32; 512 * 512];
                loop {
                    let tensor = edgewise_guest::nn::Tensor::f32(&[512, 512], &input)?;
                    std::mem::forget(model.run(&[("x", tensor)])?);
                }
            }
            "compute-loop" => {
                let mut model = Model::by_name("square")?;
                let input = vec![0f32; 512 * 512];
                loop {
                    let tensor = edgewise_guest::nn::Tensor::f32(&[512, 512], &input)?;
                    black_box(model.run(&[("x", tensor)])?);
                }
            }
            // Past the SDK, which checks shapes itself: the host must refuse this one.
            "huge-shape" => {
                let graph = graph::load_by_name("square").map_err(nn_error)?;
                let context = graph.init_execution_context().map_err(nn_error)?;
                let tensor = Tensor::new(&[1 << 20, 1 << 20, 1 << 20], TensorType::Fp32, &[0; 16]);
                context
                    .compute(vec![("x".to_owned(), tensor)])
                    .map_err(nn_error)?;
            }
            "log-flood" => {
                for i in 0..20_000 {
                    edgewise_guest::info!("flood line {i}");
                }
            }
            "log-giant" => edgewise_guest::info!("{}", "x".repeat(4 << 20)),
            "log-forge" => {
                edgewise_guest::info!(
                    "innocent\n2026-01-01T00:00:00Z ERROR edgewise: forged \x1b[31mred"
                )
            }
            "refused-flood" => loop {
                let _ = black_box(publish("not/granted", b"x"));
            },
            "forward" => {
                let to = config("forward-to").unwrap_or_else(|| "hostile/in/loop".to_owned());
                publish(&to, &msg.payload)?;
            }
            // A steady producer: 2 ms of work, then the whole payload echoed (`slow m00042`).
            slow if slow.starts_with("slow ") => {
                std::thread::sleep(Duration::from_millis(2));
                publish("hostile/echo", &msg.payload)?;
            }
            other => return Err(Error::msg(format!("unknown command {other:?}"))),
        }
        Ok(())
    }
}

fn load_bytes(encoding: GraphEncoding) -> Result<()> {
    let model = vec![0u8; 64];
    graph::load(&[model], encoding, ExecutionTarget::Cpu)
        .map(drop)
        .map_err(nn_error)
}

fn nn_error(e: edgewise_guest::__bindings::wasi::nn::errors::Error) -> Error {
    Error::msg(format!("{:?}: {}", e.code(), e.data()))
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
