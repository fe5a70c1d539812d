//! Shared pieces of the fuzz targets: how an input is cut into the chunks a socket would deliver,
//! and the in-process server the session target talks to.
//!
//! Nothing here may hide a failure: every check panics, which libFuzzer records as a crash.

pub mod server;

/// Cuts `len` bytes into chunks whose sizes (1..=64) follow a small PRNG seeded by `seed`, the
/// way TCP may deliver a stream in arbitrary pieces. Returns the end offset of every chunk.
pub fn split_points(seed: u16, len: usize) -> Vec<usize> {
    let mut state = u32::from(seed) | 1;
    let mut points = Vec::new();
    let mut at = 0;
    while at < len {
        // xorshift32: cheap, deterministic, and the seed byte steers it.
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        at = (at + 1 + (state % 64) as usize).min(len);
        points.push(at);
    }
    points
}
