//! Hostile fixtures: each mode misbehaves in one way the sandbox must
//! contain. The tests assert the exact outcome of each.
//!
//! | mode       | behaviour                                              | expected outcome            |
//! |------------|--------------------------------------------------------|-----------------------------|
//! | `loop`     | spins forever                                          | fuel exhausted (or timeout) |
//! | `memory`   | allocates 1 MiB blocks until refused                   | memory limit                |
//! | `stack`    | recurses without end (wasm call stack)                 | trap `stack_overflow`       |
//! | `shadow-stack` | recurses with big frames (Rust's in-memory stack)  | trap `memory_out_of_bounds` |
//! | `panic`    | panics with a message                                  | trap with that message      |
//! | `flood`    | publishes 1 000 messages, ignoring refusals            | ok, capped at 100 messages  |
//! | `invoking` | writes to the channel that invoked it                  | fail, "denied"              |
//! | `logs`     | prints 1 MiB to stdout and 2 000 log lines (~100 KiB)  | ok, logs truncated          |
//! | `sandbox`  | tries files, environment variables and arguments       | ok, logs what it saw        |
//! | `retry`    | publishes, then asks for a retry                       | retry, nothing committed    |
//! | `fail`     | publishes, then fails                                  | fail, nothing committed     |
//! | `alloc`    | holds `mb` MiB, then returns                           | ok under the budget         |
//! | `bigcall`  | sets tag `key` to a `kib` KiB string in one host call  | refused past the copy cap   |
//! | `busy`     | spins for `ms` milliseconds of wall clock, then ok     | ok within budget            |

use std::hint::black_box;

use paddock_sdk::prelude::*;

/// No settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Config {}

#[derive(Default)]
struct Hostile;

impl App for Hostile {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::ManualInvoke, Hook::MessageCreate];

    fn on_manual_invoke(&mut self, _ctx: &Context<Config>, event: &ManualInvoke) -> Result<(), AppError> {
        misbehave(&event.payload, None)
    }

    fn on_message_create(&mut self, _ctx: &Context<Config>, event: &MessageCreate) -> Result<(), AppError> {
        misbehave(&event.message.data, Some(&event.message.channel.name))
    }
}

fn misbehave(args: &Value, invoking: Option<&str>) -> Result<(), AppError> {
    let mode = args.get("mode").and_then(Value::as_str).unwrap_or("");
    match mode {
        "loop" => spin_forever(),
        "memory" => {
            let mut blocks: Vec<Vec<u8>> = Vec::new();
            loop {
                blocks.push(black_box(vec![1u8; 1 << 20]));
            }
        }
        "alloc" => {
            let mb = args.get("mb").and_then(Value::as_u64).unwrap_or(1) as usize;
            let blocks: Vec<Vec<u8>> = (0..mb).map(|_| black_box(vec![1u8; 1 << 20])).collect();
            paddock_sdk::info!("holding {} MiB", blocks.len());
            Ok(())
        }
        "stack" => {
            // With "depth", recurse that deep and return; without, forever.
            let depth = args.get("depth").and_then(Value::as_u64).map_or(1, |d| u64::MAX - d);
            black_box(recurse(black_box(depth)));
            Ok(())
        }
        "bigcall" => {
            let kib = args.get("kib").and_then(Value::as_u64).unwrap_or(2048) as usize;
            let key = args.get("key").and_then(Value::as_str).unwrap_or("big");
            tags::set(key, &"x".repeat(kib * 1024))?;
            Ok(())
        }
        "shadow-stack" => {
            black_box(recurse_in_memory(black_box(0)));
            Ok(())
        }
        "panic" => panic!("hostile panic: {}", args.get("message").and_then(Value::as_str).unwrap_or("boom")),
        "flood" => {
            let refused = (0..1_000).filter(|i| channels::publish("flood", &json!({ "i": i })).is_err()).count();
            paddock_sdk::info!("{refused} publishes refused");
            Ok(())
        }
        "invoking" => {
            let channel = invoking.unwrap_or("commands");
            channels::publish(channel, &json!({"echo": true}))?;
            Ok(())
        }
        "logs" => {
            let line = "x".repeat(1023);
            for _ in 0..1024 {
                println!("{line}");
            }
            for i in 0..2_000 {
                paddock_sdk::info!("log line {i}: {}", "y".repeat(40));
            }
            Ok(())
        }
        "sandbox" => {
            let file = std::fs::read_to_string("/etc/passwd").map(|s| s.len());
            let dir = std::fs::read_dir("/").map(|d| d.count());
            let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            let args: Vec<String> = std::env::args().collect();
            paddock_sdk::info!("file={} dir={} env={} args={}", file.is_ok(), dir.is_ok(), env.len(), args.len());
            Ok(())
        }
        "retry" => {
            channels::publish("partial", &json!({"written": true}))?;
            tags::set("partial", &true)?;
            Err(AppError::retry("upstream unavailable"))
        }
        "fail" => {
            channels::publish("partial", &json!({"written": true}))?;
            Err(AppError::fail("bad input"))
        }
        "busy" => {
            let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(10);
            let start = std::time::Instant::now();
            while start.elapsed().as_millis() < u128::from(ms) {
                black_box(());
            }
            Ok(())
        }
        other => Err(AppError::fail(format!("unknown mode {other:?}"))),
    }
}

fn spin_forever() -> ! {
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_add(1));
    }
}

/// Recursion whose frames live on the wasm call stack (no locals in linear
/// memory): overflows wasmtime's stack limit.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // Not a tail call and not an associative accumulator, so LLVM cannot
    // turn it into a loop. Counts up to wrap at u64::MAX + 1 = 0.
    recurse(n.wrapping_add(1)).wrapping_mul(31) ^ n.rotate_left(7)
}

/// Recursion with a 512-byte array per frame: the array lives on Rust's
/// shadow stack in linear memory, which overflows before the wasm stack.
#[allow(unconditional_recursion, reason = "the stack overflow is the point")]
fn recurse_in_memory(depth: u64) -> u64 {
    let frame = black_box([depth; 64]);
    recurse_in_memory(black_box(depth + 1)) + frame[0]
}

paddock_sdk::export_app!(Hostile);
