//! Realistic entries: about 300 bytes on the wire, a handful of event and component names,
//! UUID-like trace ids shared by runs of entries, a JSON payload of a few fields, and a cost
//! on one entry in four. Deterministic for a seed, so every workload writes the same kind of
//! data.

use witness_protocol::{Cost, Entry};

const EVENTS: [&str; 8] = [
    "llm_call",
    "tool_call",
    "http_request",
    "db_query",
    "cache_miss",
    "user_action",
    "retry",
    "span_end",
];
const COMPONENTS: [&str; 12] = [
    "planner",
    "retriever",
    "billing",
    "auth",
    "gateway",
    "scheduler",
    "indexer",
    "mailer",
    "search",
    "ranker",
    "storage",
    "notifier",
];
/// Models of the costed entries: three the price table knows (under the names the SDKs
/// report) and one it does not, so that every costed entry makes the daemon look a price up.
const MODELS: [&str; 4] = [
    "gpt-4o-mini-2024-07-18",
    "claude-sonnet-4-5-20250929",
    "gemini-2.5-flash",
    "my-finetune",
];

/// splitmix64: tiny, fast and good enough to make data look random.
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Makes entries.
pub struct Generator {
    rng: Rng,
    trace: String,
    left_in_trace: u64,
    n: u64,
}

impl Generator {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Generator {
        Generator {
            rng: Rng::new(seed),
            trace: String::new(),
            left_in_trace: 0,
            n: 0,
        }
    }

    fn uuid(&mut self) -> String {
        let a = self.rng.next_u64();
        let b = self.rng.next_u64();
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }

    /// The next entry.
    pub fn entry(&mut self) -> Entry {
        if self.left_in_trace == 0 {
            self.trace = self.uuid();
            self.left_in_trace = 1 + self.rng.below(20);
        }
        self.left_in_trace -= 1;
        self.n += 1;
        let event = EVENTS[self.rng.below(EVENTS.len() as u64) as usize];
        let component = COMPONENTS[self.rng.below(COMPONENTS.len() as u64) as usize];
        let payload = format!(
            r#"{{"route":"/v1/{component}/{}","status":{},"latency_ms":{},"user":"u-{:06}","region":"eu-west-{}","attempt":{},"bytes":{},"note":"generated entry {} of a realistic workload"}}"#,
            self.rng.below(100),
            [200, 200, 200, 201, 404, 500][self.rng.below(6) as usize],
            self.rng.below(2000),
            self.rng.below(1_000_000),
            1 + self.rng.below(3),
            1 + self.rng.below(3),
            self.rng.below(1 << 20),
            self.n,
        );
        let mut entry = Entry::new(event, component)
            .trace(self.trace.clone())
            .payload_text(payload);
        if self.rng.below(4) == 0 {
            let tokens_in = 100 + self.rng.below(4000);
            let tokens_out = 10 + self.rng.below(800);
            let model = MODELS[self.rng.below(MODELS.len() as u64) as usize];
            // Tokens and a model, no money: the daemon prices them, as it does for most
            // callers (SDKs report tokens, not dollars).
            let cached = self.rng.below(tokens_in / 2);
            entry = entry.cost(
                Cost::tokens(tokens_in, tokens_out)
                    .model(model)
                    .cache_read_tokens(cached),
            );
        }
        entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_about_three_hundred_bytes_and_valid() {
        let mut generator = Generator::new(1);
        let mut total = 0;
        for _ in 0..1000 {
            let entry = generator.entry();
            entry.check_limits().unwrap();
            serde_json::from_str::<serde_json::Value>(&entry.payload).unwrap();
            let mut bytes = Vec::new();
            witness_protocol::frame::encode(&entry, u32::MAX >> 4, &mut bytes).unwrap();
            total += bytes.len();
        }
        let mean = total / 1000;
        assert!((250..=350).contains(&mean), "mean encoded size {mean}");
    }
}
