//! FFmpeg's bitstream parsers read up to 64 bytes past the end of the
//! buffer they are given unless it is padded. A bitstream that ends exactly
//! at an unmapped page must decode without touching that page.
//!
//! Regression test for an over-read the `ffmpeg_input` fuzz target found
//! (`fuzz/seeds/ffmpeg_input/h264` under AddressSanitizer).

// Test code: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::ptr;

use vhost_device_video::engine::decode::{CodedFormat, DecoderFactory, FfmpegDecoders};

const STREAM: &[u8] = include_bytes!("data/testsrc-64x48.h264");

/// Memory whose last bytes are followed by an inaccessible page.
struct GuardedBuffer {
    base: *mut libc::c_void,
    len: usize,
    page: usize,
}

impl GuardedBuffer {
    fn new(pages: usize) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let len = (pages + 1) * page;
        // SAFETY: an anonymous private mapping owned by this value.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // SAFETY: the last page lies inside the mapping made above.
        let guard = unsafe { base.cast::<u8>().add(pages * page) };
        // SAFETY: as above.
        let protected = unsafe { libc::mprotect(guard.cast(), page, libc::PROT_NONE) };
        assert_eq!(protected, 0);
        GuardedBuffer { base, len, page }
    }

    /// `bytes` copied so that their last byte is the last accessible one.
    fn place(&mut self, bytes: &[u8]) -> &[u8] {
        let accessible = self.len - self.page;
        assert!(bytes.len() <= accessible);
        let start = accessible - bytes.len();
        // SAFETY: `start..accessible` is readable and writable mapped memory
        // borrowed mutably through `self` for the returned lifetime.
        let slice = unsafe {
            std::slice::from_raw_parts_mut(self.base.cast::<u8>().add(start), bytes.len())
        };
        slice.copy_from_slice(bytes);
        slice
    }
}

impl Drop for GuardedBuffer {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

#[test]
fn parsers_never_read_past_the_input() {
    let factory = FfmpegDecoders::new(1).unwrap();
    let mut guarded = GuardedBuffer::new(STREAM.len().div_ceil(4096) + 1);
    let mut decoder = factory.create(CodedFormat::H264).unwrap();
    let mut events = Vec::new();
    // The whole stream, then every tail of it, each ending at the guard.
    for cut in [0, 1, 7, 100, STREAM.len() / 2, STREAM.len() - 3] {
        let input = guarded.place(&STREAM[cut..]);
        decoder.decode(input, cut as u64, &mut events).unwrap();
    }
    decoder.flush(&mut events).unwrap();
    assert!(!events.is_empty(), "the stream decoded to nothing");
}
