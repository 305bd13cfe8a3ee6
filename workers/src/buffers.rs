//! Image buffers handed from one job to the next on the same slot.
//!
//! The binaries start glibc's malloc memory-first: a buffer of 512 KiB or more gets a
//! mapping of its own, which goes back to the system when freed (see
//! `pixmill_shared::runtime`). Left at that, every job would map its decode,
//! intermediate and output buffers fresh and fault each of their pages in. Instead,
//! the decoder and the ops take their large buffers from [`zeroed`], and the pipeline
//! hands them back with [`give`] and [`recycle`] once a step or the encoder is done with
//! them. A slot thread keeps what it is given for its next job: a photo of the shape of
//! the last one then costs no mapping and no page fault, only the zeroing.
//!
//! What a slot keeps is bounded, so the worker's resident size stays that of the jobs
//! in hand:
//!
//! - only slot threads keep buffers ([`enable`]); anywhere else [`give`] just frees;
//! - a slot keeps at most [`MAX_KEPT`] buffers and its budget in bytes
//!   (`PIXMILL_SLOT_BUFFERS_MB`); a buffer that does not fit is freed;
//! - a request no kept buffer can hold frees the kept buffers smaller than it, and a
//!   buffer the job just finished did not hand back is freed ([`job_done`]), so the
//!   kept buffers are the last job's and follow the shapes of the current jobs instead
//!   of piling up beside them;
//! - a slot that has had no job for [`IDLE`] frees them all ([`release`], called by
//!   `crate::slots`).

use std::{cell::RefCell, time::Duration};

use image::DynamicImage;

/// Smaller buffers are left to malloc, which reuses them from its heap anyway.
pub const MIN_KEPT: usize = 256 * 1024;

/// At most this many buffers kept per slot: a job's decode, intermediate and output
/// buffers, with room for a pipeline of a few steps.
pub const MAX_KEPT: usize = 4;

/// A slot with no job for this long frees the buffers it keeps.
pub const IDLE: Duration = Duration::from_secs(1);

struct Pool {
    /// 0 on every thread but the slots: nothing is kept.
    budget: usize,
    held: usize,
    /// Each buffer, and whether the current job handed it back.
    kept: Vec<(Vec<u8>, bool)>,
}

thread_local! {
    static POOL: RefCell<Pool> = const {
        RefCell::new(Pool {
            budget: 0,
            held: 0,
            kept: Vec::new(),
        })
    };
}

impl Pool {
    fn take(&mut self, len: usize) -> Option<Vec<u8>> {
        let best = (0..self.kept.len())
            .filter(|&i| self.kept[i].0.capacity() >= len)
            .min_by_key(|&i| self.kept[i].0.capacity());
        match best {
            Some(i) => {
                let (buf, _) = self.kept.swap_remove(i);
                self.held -= buf.capacity();
                Some(buf)
            }
            None => {
                // None fits: free the ones too small before a new buffer is mapped.
                self.retain(|b, _| b.capacity() >= len);
                None
            }
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(&Vec<u8>, bool) -> bool) {
        let held = &mut self.held;
        self.kept.retain(|(b, used)| {
            let kept = keep(b, *used);
            if !kept {
                *held -= b.capacity();
            }
            kept
        });
    }

    fn keep(&mut self, buf: Vec<u8>) {
        let size = buf.capacity();
        if size >= MIN_KEPT && self.kept.len() < MAX_KEPT && self.held + size <= self.budget {
            self.held += size;
            self.kept.push((buf, true));
        }
    }
}

/// `len` zero bytes, in a buffer this slot kept if one is large enough.
pub fn zeroed(len: usize) -> Vec<u8> {
    if len >= MIN_KEPT {
        let kept = POOL.with_borrow_mut(|pool| {
            if pool.budget == 0 {
                None
            } else {
                pool.take(len)
            }
        });
        if let Some(mut buf) = kept {
            buf.clear();
            // Zeroing pages already mapped costs a fraction of faulting in new ones.
            buf.resize(len, 0);
            return buf;
        }
    }
    vec![0; len]
}

/// Hands `buf` back for this slot's next job; frees it if the slot keeps no more.
pub fn give(buf: Vec<u8>) {
    if buf.capacity() >= MIN_KEPT {
        POOL.with_borrow_mut(|pool| pool.keep(buf));
    }
}

/// Hands back the pixels of an image no longer needed (8-bit images; others are freed).
pub fn recycle(image: DynamicImage) {
    match image {
        DynamicImage::ImageLuma8(img) => give(img.into_raw()),
        DynamicImage::ImageLumaA8(img) => give(img.into_raw()),
        DynamicImage::ImageRgb8(img) => give(img.into_raw()),
        DynamicImage::ImageRgba8(img) => give(img.into_raw()),
        _ => {}
    }
}

/// A black 8-bit image of `color` (Luma8, LumaA8, Rgb8 or Rgba8) in a kept buffer;
/// other colour types get a new one.
pub fn image(width: u32, height: u32, color: image::ColorType) -> DynamicImage {
    use image::{ColorType, ImageBuffer};
    let len = |channels: usize| width as usize * height as usize * channels;
    let made = match color {
        ColorType::L8 => {
            ImageBuffer::from_raw(width, height, zeroed(len(1))).map(DynamicImage::ImageLuma8)
        }
        ColorType::La8 => {
            ImageBuffer::from_raw(width, height, zeroed(len(2))).map(DynamicImage::ImageLumaA8)
        }
        ColorType::Rgb8 => {
            ImageBuffer::from_raw(width, height, zeroed(len(3))).map(DynamicImage::ImageRgb8)
        }
        ColorType::Rgba8 => {
            ImageBuffer::from_raw(width, height, zeroed(len(4))).map(DynamicImage::ImageRgba8)
        }
        _ => None,
    };
    made.unwrap_or_else(|| DynamicImage::new(width, height, color))
}

/// Lets this thread keep up to `budget` bytes of buffers (a slot thread calls it when
/// it starts). 0 frees what it kept and keeps nothing more.
pub fn enable(budget: usize) {
    POOL.with_borrow_mut(|pool| pool.budget = budget);
    if budget == 0 {
        release();
    }
}

/// Ends a job on this slot: frees the kept buffers the job did not hand back, so what
/// is kept is the job's own working set.
pub fn job_done() {
    POOL.with_borrow_mut(|pool| {
        pool.retain(|_, used| used);
        pool.kept.iter_mut().for_each(|(_, used)| *used = false);
    });
}

/// Frees every buffer this thread keeps.
pub fn release() {
    let kept = POOL.with_borrow_mut(|pool| {
        pool.held = 0;
        std::mem::take(&mut pool.kept)
    });
    drop(kept);
}

/// The bytes of buffers this thread keeps.
#[cfg(test)]
pub(crate) fn held() -> usize {
    POOL.with_borrow(|pool| pool.held)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1024 * 1024;

    // Each test runs on a thread of its own, so each starts with an empty pool.

    #[test]
    fn a_slot_gets_back_the_buffer_its_last_job_gave() {
        enable(16 * MIB);
        let mut a = zeroed(5 * MIB);
        a.fill(0xAB);
        let at = a.as_ptr();
        give(a);
        assert_eq!(held(), 5 * MIB);
        // The next job's buffer of the same shape, or smaller, is that buffer, zeroed.
        job_done();
        assert_eq!(held(), 5 * MIB);
        let b = zeroed(4 * MIB);
        assert_eq!(b.as_ptr(), at);
        assert_eq!(b.len(), 4 * MIB);
        assert!(b.iter().all(|&v| v == 0));
        assert_eq!(held(), 0);
        recycle(DynamicImage::ImageRgb8(
            image::RgbImage::from_raw(1024, 1024, b[..3 * MIB].to_vec()).expect("image"),
        ));
        assert_eq!(held(), 3 * MIB);
        release();
        assert_eq!(held(), 0);
    }

    #[test]
    fn small_buffers_and_other_threads_are_left_alone() {
        enable(16 * MIB);
        give(vec![0; 64 * 1024]);
        assert_eq!(held(), 0);
        give(vec![0; 2 * MIB]);
        assert_eq!(held(), 2 * MIB);
        // A thread that never enabled keeping (an async or I/O thread) frees.
        std::thread::spawn(|| {
            give(vec![0; 2 * MIB]);
            assert_eq!(held(), 0);
        })
        .join()
        .expect("thread");
        // Turning keeping off frees what was kept.
        enable(0);
        assert_eq!(held(), 0);
        give(vec![0; 2 * MIB]);
        assert_eq!(held(), 0);
    }

    #[test]
    fn the_budget_and_the_count_bound_what_a_slot_keeps() {
        enable(10 * MIB);
        for _ in 0..3 {
            give(vec![0; 4 * MIB]);
        }
        // Two fit in 10 MiB; the third was freed.
        assert_eq!(held(), 8 * MIB);
        release();
        enable(64 * MIB);
        for _ in 0..MAX_KEPT + 2 {
            give(vec![0; MIB]);
        }
        assert_eq!(held(), MAX_KEPT * MIB);
        release();
    }

    #[test]
    fn a_larger_photo_replaces_the_buffers_it_cannot_use() {
        enable(64 * MIB);
        give(vec![0; 5 * MIB]);
        give(vec![0; 5 * MIB]);
        give(vec![0; 8 * MIB]);
        assert_eq!(held(), 18 * MIB);
        // 6 MiB: the 8 MiB buffer serves it, the 5 MiB ones stay for smaller requests.
        let a = zeroed(6 * MIB);
        assert_eq!((a.capacity(), held()), (8 * MIB, 10 * MIB));
        // 7 MiB fits none: the two 5 MiB buffers are freed before a new one is made, so
        // the slot never holds the old shapes beside the new ones.
        let b = zeroed(7 * MIB);
        assert_eq!(held(), 0);
        give(a);
        give(b);
        assert_eq!(held(), 15 * MIB);
        // A smaller request takes the smallest buffer that holds it.
        assert_eq!(zeroed(MIB).capacity(), 7 * MIB);
        release();
    }

    #[test]
    fn what_a_job_did_not_hand_back_is_freed_when_it_ends() {
        enable(64 * MIB);
        // A blur job leaves its decode and its output buffer.
        give(vec![0; 5 * MIB]);
        give(vec![0; 5 * MIB]);
        job_done();
        assert_eq!(held(), 10 * MIB);
        // A swap job uses one of them; the other is freed when it ends.
        let decode = zeroed(5 * MIB);
        give(decode);
        job_done();
        assert_eq!(held(), 5 * MIB);
        // A job that hands nothing back leaves nothing kept.
        let _result = zeroed(MIB);
        job_done();
        assert_eq!(held(), 0);
    }
}
