//! Job bodies, stored so a small one costs its own bytes and nothing more.
//!
//! A body of at most `SMALL_BODY` bytes is appended to the current 64 KiB
//! chunk; a bigger one keeps its own buffer, which replies send without a
//! copy. A queue mostly deletes jobs in the order they came, so whole chunks
//! empty out and are freed. When jobs die out of order instead, chunks end
//! up sparse: the job store then marks the half-empty chunks for evacuation
//! ([`BodyArena::begin_evacuation`]) and, a few jobs per operation, calls
//! [`BodyArena::relocate`] for every job, which moves the bodies of those
//! chunks into fresh ones.
//!
//! Invariants: `live` is the sum of the lengths of the small bodies stored;
//! a chunk's `live` is the sum over its own bodies; a chunk with nothing
//! live is freed unless it is the one being filled; new bodies never go into
//! a chunk being evacuated (the current chunk never is one).

use super::job::BodyRef;
use bytes::Bytes;

/// Bodies up to this size (trailing CRLF included) are packed into chunks.
pub const SMALL_BODY: usize = 4096;

/// Size of a chunk of small bodies.
const CHUNK: usize = 64 * 1024;

/// The chunk number that marks a big body; the low word is its slot.
const BIG: u64 = u32::MAX as u64;

#[derive(Debug, Default)]
struct Chunk {
    data: Vec<u8>,
    live: usize,
    /// Its bodies are being moved out; freed once they all are.
    evacuating: bool,
}

#[derive(Debug, Default)]
pub struct BodyArena {
    chunks: Vec<Chunk>,
    free_chunks: Vec<u32>,
    /// The chunk new small bodies go to.
    current: Option<u32>,
    big: Vec<Option<Bytes>>,
    free_big: Vec<u32>,
    /// Bytes of small bodies stored.
    live: usize,
    /// Bytes of big bodies stored.
    big_bytes: usize,
}

impl BodyRef {
    fn small(chunk: u32, offset: usize, len: usize) -> BodyRef {
        debug_assert!(offset < CHUNK && len <= SMALL_BODY);
        BodyRef(u64::from(chunk) << 32 | (offset as u64) << 16 | len as u64)
    }

    fn big(slot: u32) -> BodyRef {
        BodyRef(BIG << 32 | u64::from(slot))
    }

    fn chunk(self) -> u64 {
        self.0 >> 32
    }

    /// (chunk, offset, length) of a small body.
    fn small_parts(self) -> Option<(usize, usize, usize)> {
        (self.chunk() != BIG).then(|| {
            (
                self.chunk() as usize,
                (self.0 >> 16 & 0xffff) as usize,
                (self.0 & 0xffff) as usize,
            )
        })
    }
}

impl BodyArena {
    /// Keeps `body` and returns where it is.
    pub fn store(&mut self, body: &Bytes) -> BodyRef {
        if body.len() > SMALL_BODY {
            self.big_bytes += body.len();
            let slot = match self.free_big.pop() {
                Some(slot) => {
                    self.big[slot as usize] = Some(body.clone());
                    slot
                }
                None => {
                    self.big.push(Some(body.clone()));
                    (self.big.len() - 1) as u32
                }
            };
            return BodyRef::big(slot);
        }
        self.store_small(body)
    }

    fn store_small(&mut self, body: &[u8]) -> BodyRef {
        let fits = |c: &Chunk| CHUNK - c.data.len() >= body.len();
        let chunk = match self.current {
            Some(c) if fits(&self.chunks[c as usize]) => c,
            full => {
                let fresh = self.new_chunk();
                self.current = Some(fresh);
                if let Some(old) = full {
                    self.free_if_empty(old);
                }
                fresh
            }
        };
        let c = &mut self.chunks[chunk as usize];
        let offset = c.data.len();
        c.data.extend_from_slice(body);
        c.live += body.len();
        self.live += body.len();
        BodyRef::small(chunk, offset, body.len())
    }

    fn new_chunk(&mut self) -> u32 {
        let chunk = Chunk {
            data: Vec::with_capacity(CHUNK),
            ..Chunk::default()
        };
        match self.free_chunks.pop() {
            Some(i) => {
                self.chunks[i as usize] = chunk;
                i
            }
            None => {
                self.chunks.push(chunk);
                (self.chunks.len() - 1) as u32
            }
        }
    }

    fn free_if_empty(&mut self, chunk: u32) {
        let c = &mut self.chunks[chunk as usize];
        if c.live == 0 && self.current != Some(chunk) {
            *c = Chunk::default();
            self.free_chunks.push(chunk);
        }
    }

    /// The body's bytes.
    pub fn get(&self, r: BodyRef) -> &[u8] {
        match r.small_parts() {
            Some((chunk, offset, len)) => &self.chunks[chunk].data[offset..offset + len],
            None => self.big_body(r),
        }
    }

    fn big_body(&self, r: BodyRef) -> &Bytes {
        self.big[r.0 as u32 as usize]
            .as_ref()
            .expect("live big body")
    }

    /// The body as a buffer a reply can own: a copy of a small body, the
    /// shared buffer of a big one.
    pub fn to_bytes(&self, r: BodyRef) -> Bytes {
        match r.small_parts() {
            Some(_) => Bytes::copy_from_slice(self.get(r)),
            None => self.big_body(r).clone(),
        }
    }

    pub fn len(&self, r: BodyRef) -> usize {
        match r.small_parts() {
            Some((_, _, len)) => len,
            None => self.big_body(r).len(),
        }
    }

    /// Lets go of a body.
    pub fn free(&mut self, r: BodyRef) {
        match r.small_parts() {
            Some((chunk, _, len)) => {
                self.chunks[chunk].live -= len;
                self.live -= len;
                self.free_if_empty(chunk as u32);
            }
            None => {
                let slot = r.0 as u32;
                if let Some(body) = self.big[slot as usize].take() {
                    self.big_bytes -= body.len();
                }
                self.free_big.push(slot);
            }
        }
    }

    /// Bytes held for bodies: chunks of small ones, and big ones.
    pub fn held(&self) -> usize {
        self.allocated() + self.big_bytes
    }

    /// Bytes of chunks allocated.
    fn allocated(&self) -> usize {
        (self.chunks.len() - self.free_chunks.len()) * CHUNK
    }

    /// Chunks hold much more than their live bodies: worth a pass of
    /// [`relocate`](Self::relocate) over every body. The slack grows with the
    /// live bytes, so a pass (which visits every job) comes at most once per
    /// so many bytes freed, whatever the store's size.
    pub fn is_fragmented(&self) -> bool {
        self.allocated() > 2 * self.live + self.live / 4 + 4 * CHUNK
    }

    /// Marks every chunk less than half used (but the current one) for
    /// evacuation; returns whether there is any. Once
    /// [`relocate`](Self::relocate) has seen every body, the marked chunks
    /// are empty and freed, and each chunk left is at least half full.
    pub fn begin_evacuation(&mut self) -> bool {
        let mut any = false;
        for (i, c) in self.chunks.iter_mut().enumerate() {
            if self.current != Some(i as u32) && c.live > 0 && c.live * 2 < CHUNK {
                c.evacuating = true;
                any = true;
            }
        }
        any
    }

    /// Moves the body out of its chunk if that chunk is being evacuated,
    /// and returns its new place.
    pub fn relocate(&mut self, r: BodyRef) -> Option<BodyRef> {
        let (chunk, offset, len) = r.small_parts()?;
        if !self.chunks[chunk].evacuating {
            return None;
        }
        // Copied out first: storing may free or reuse nothing but fresh chunks.
        let body = self.chunks[chunk].data[offset..offset + len].to_vec();
        let moved = self.store_small(&body);
        self.free(r);
        Some(moved)
    }

    /// Bytes held for small bodies and bytes of them alive, for tests.
    #[cfg(test)]
    pub fn usage(&self) -> (usize, usize) {
        (self.allocated(), self.live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(n: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; n])
    }

    #[test]
    fn small_and_big_bodies_come_back_intact() {
        let mut a = BodyArena::default();
        let small = a.store(&body(100, b'a'));
        let edge = a.store(&body(SMALL_BODY, b'b'));
        let big = a.store(&body(SMALL_BODY + 1, b'c'));
        assert_eq!(a.get(small), &body(100, b'a')[..]);
        assert_eq!(a.to_bytes(edge), body(SMALL_BODY, b'b'));
        assert_eq!(a.len(big), SMALL_BODY + 1);
        assert_eq!(a.to_bytes(big), body(SMALL_BODY + 1, b'c'));
        assert_eq!(a.usage(), (CHUNK, 100 + SMALL_BODY));
        a.free(big);
        a.free(small);
        a.free(edge);
        assert_eq!(a.usage(), (CHUNK, 0), "the current chunk stays");
    }

    #[test]
    fn emptied_chunks_are_freed_in_fifo_use() {
        let mut a = BodyArena::default();
        let mut refs = std::collections::VecDeque::new();
        for i in 0..10_000 {
            refs.push_back(a.store(&body(100, i as u8)));
            if refs.len() > 1000 {
                a.free(refs.pop_front().unwrap());
            }
        }
        let (allocated, live) = a.usage();
        assert_eq!(live, 1000 * 100);
        assert!(allocated <= live + 2 * CHUNK, "{allocated}");
        assert!(!a.is_fragmented());
    }

    #[test]
    fn relocation_packs_sparse_chunks() {
        let mut a = BodyArena::default();
        let mut refs: Vec<_> = (0..20_000).map(|i| a.store(&body(100, i as u8))).collect();
        // Keep one body in ten: every chunk is 10% used.
        let mut kept = Vec::new();
        for (i, r) in refs.drain(..).enumerate() {
            if i % 10 == 0 {
                kept.push((i, r));
            } else {
                a.free(r);
            }
        }
        assert!(a.is_fragmented());
        assert!(a.begin_evacuation());
        for (_, r) in kept.iter_mut() {
            if let Some(moved) = a.relocate(*r) {
                *r = moved;
            }
        }
        let (allocated, live) = a.usage();
        assert_eq!(live, 2000 * 100);
        assert!(allocated <= 2 * live + CHUNK, "{allocated} for {live}");
        assert!(!a.is_fragmented());
        for (i, r) in kept {
            assert_eq!(a.get(r), &body(100, i as u8)[..]);
        }
    }
}
