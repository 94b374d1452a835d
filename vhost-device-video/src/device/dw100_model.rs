//! The pixel work of QEMU's `imx8mp-dw100` model
//! (`docs/protocol-dw100-model.md`): a `JOB` carries the DW100 registers,
//! the vertex map and the source planes; [`JobHeader::check`] turns the
//! registers into the dewarper's checked job, and [`remap_job`], the
//! virtio dewarper's own job execution, runs it on the same engine.

use std::mem::size_of;
use std::sync::Arc;

use thiserror::Error as ThisError;
use vm_memory::ByteValued;

use super::dewarper::remap_job;
use crate::engine::dewarp::{DewarpEngine, DewarpError, VertexMap, BOUNDARY_CHROMA, BOUNDARY_LUMA};
use crate::log_limit::warn_limited;
use crate::protocol::dewarp::status;
use crate::protocol::dw100_model::{reg, JobHeader, MessageError, ResultHeader};

// The boundary pixel the job check takes is the one the engine writes.
const _: () = assert!(
    reg::BOUNDARY_BLACK
        == (BOUNDARY_LUMA as u32) << 16 | (BOUNDARY_CHROMA as u32) << 8 | BOUNDARY_CHROMA as u32
);

/// Why a job failed; each maps to a `RESULT` status.
#[derive(Debug, ThisError)]
enum Failure {
    #[error(transparent)]
    Message(#[from] MessageError),
    #[error("vertex map: {0}")]
    Map(DewarpError),
    #[error("remap engine: {0}")]
    Engine(DewarpError),
}

impl Failure {
    fn status(&self) -> u32 {
        match self {
            Failure::Message(e) => e.status(),
            Failure::Map(_) | Failure::Engine(_) => status::ERR_INTERNAL,
        }
    }
}

/// What a job came to.
#[derive(Clone, Copy, Debug)]
pub struct Reply<'a> {
    /// The `RESULT` status.
    pub status: u32,
    /// The `RESULT` payload: the status and, on `OK`, the destination planes.
    pub payload: &'a [u8],
}

/// The device behind one job socket connection: runs one job at a time.
pub struct Dw100ModelDevice {
    engine: Arc<dyn DewarpEngine>,
    /// The last `RESULT` payload, its buffer reused from job to job.
    result: Vec<u8>,
}

impl Dw100ModelDevice {
    /// A device running its jobs on `engine`.
    pub fn new(engine: Arc<dyn DewarpEngine>) -> Self {
        Dw100ModelDevice {
            engine,
            result: Vec::new(),
        }
    }

    /// Runs the job of the `JOB` message `sequence` whose payload is
    /// `payload`. A refused job is logged with its reason.
    pub fn run_job(&mut self, sequence: u32, payload: &[u8]) -> Reply<'_> {
        let status = match self.execute(payload) {
            Ok(()) => status::OK,
            Err(failure) => {
                warn_limited!("dw100-model: job {sequence} failed: {failure}");
                self.result.clear();
                self.result
                    .extend_from_slice(ResultHeader::error(failure.status()).as_slice());
                failure.status()
            }
        };
        Reply {
            status,
            payload: &self.result,
        }
    }

    /// Checks and runs the job; on success `self.result` holds the result.
    fn execute(&mut self, payload: &[u8]) -> Result<(), Failure> {
        let (fixed, data) = payload
            .split_at_checked(size_of::<JobHeader>())
            .ok_or(MessageError::ShortPayload(payload.len()))?;
        let mut header = JobHeader::default();
        header.as_mut_slice().copy_from_slice(fixed);
        let checked = header.check(payload.len())?;
        let job = &checked.job;
        // The check made the payload exactly map + source planes long.
        let (map_bytes, src) = data.split_at(checked.map_length().min(data.len()));
        let map = VertexMap::from_le_bytes(job.map_width, job.map_height, map_bytes)
            .map_err(Failure::Map)?;

        let result_len = size_of::<ResultHeader>();
        // Zeroed so that stride padding never carries another job's pixels.
        self.result.clear();
        self.result.resize(result_len + checked.dst_length(), 0);
        let (head, planes) = self.result.split_at_mut(result_len);
        let engine_time_ns =
            remap_job(&*self.engine, job, &map, src, planes).map_err(Failure::Engine)?;
        let [dst_y, dst_uv] = checked
            .dst_lengths
            .map(|len| u32::try_from(len).unwrap_or(u32::MAX));
        head.copy_from_slice(ResultHeader::ok(engine_time_ns, dst_y, dst_uv).as_slice());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::dewarp::{maps, FastEngine};

    /// A 176x144 NV12 -> NV12 job with the driver's identity map.
    fn identity_job() -> Vec<u8> {
        let (w, h) = (176u32, 144u32);
        let mut header = JobHeader::default();
        header.set_reg(reg::DEWARP_CTRL, 1 | (2 << 4) | (2 << 6));
        header.set_reg(reg::SRC_IMG_SIZE, (h << 16) | w);
        header.set_reg(reg::DST_IMG_SIZE, (h << 16) | w);
        header.set_reg(reg::SRC_IMG_STRIDE, w);
        header.set_reg(reg::DST_IMG_STRIDE, w);
        header.set_reg(reg::MAP_LUT_SIZE, (10 << 16) | 12);
        header.set_reg(reg::SCALE_FACTOR, 128);
        header.set_reg(reg::BOUNDARY_PIXEL, 0x8080);
        let map = maps::driver_identity_map(w, h, w, h).to_le_bytes();
        let (y, uv) = ((w * h) as usize, (w * h / 2) as usize);
        header.map_length = (map.len() as u32).into();
        header.src_y_length = (y as u32).into();
        header.src_uv_length = (uv as u32).into();
        header.dst_y_length = (y as u32).into();
        header.dst_uv_length = (uv as u32).into();
        let mut payload = header.as_slice().to_vec();
        payload.extend(map);
        payload.extend((0..y + uv).map(|i| (i * 7 % 251) as u8));
        payload
    }

    #[test]
    fn identity_job_returns_its_source() {
        let mut device = Dw100ModelDevice::new(Arc::new(FastEngine::new(1)));
        let payload = identity_job();
        let source = payload[176 + 12 * 10 * 4..].to_vec();
        let result = device.run_job(1, &payload).payload.to_vec();
        let mut head = ResultHeader::default();
        head.as_mut_slice().copy_from_slice(&result[..32]);
        assert_eq!(head.status.to_native(), status::OK);
        assert_eq!(head.dst_y_length.to_native(), 176 * 144);
        assert_eq!(head.dst_uv_length.to_native(), 176 * 72);
        assert!(result[32..] == source[..], "destination differs");
    }

    #[test]
    fn refused_jobs_get_their_status_alone() {
        let mut device = Dw100ModelDevice::new(Arc::new(FastEngine::new(1)));
        let status_of = |device: &mut Dw100ModelDevice, payload: &[u8]| {
            let reply = device.run_job(2, payload);
            assert_eq!(reply.payload.len(), 32);
            assert_eq!(reply.payload[..4], reply.status.to_le_bytes());
            reply.status
        };
        let good = identity_job();
        assert_eq!(status_of(&mut device, &good[..100]), status::ERR_MALFORMED);
        assert_eq!(
            status_of(&mut device, &good[..good.len() - 1]),
            status::ERR_MALFORMED
        );
        let mut bad = good.clone();
        bad[4..8].copy_from_slice(&(3u32 << 4).to_le_bytes());
        assert_eq!(status_of(&mut device, &bad), status::ERR_UNSUPPORTED);
        let mut bad = good.clone();
        bad[reg::MAP_LUT_SIZE..reg::MAP_LUT_SIZE + 4]
            .copy_from_slice(&((10u32 << 16) | 13).to_le_bytes());
        assert_eq!(status_of(&mut device, &bad), status::ERR_INVALID_MAP);
        // A good job after them still works.
        let reply = device.run_job(3, &good);
        assert_eq!(
            (reply.status, reply.payload[..4].to_vec()),
            (status::OK, vec![0; 4])
        );
        assert_eq!(reply.payload.len(), 32 + 176 * 144 * 3 / 2);
    }
}
