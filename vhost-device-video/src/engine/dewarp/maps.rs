//! Vertex map builders: the dw100 driver's default map and deterministic
//! test/demo maps (fisheye correction, rotation).

use super::{map_vertices, VertexMap, CELL_SIZE};

/// Largest UQ12.4 coordinate a map entry can hold.
const MAX_COORDINATE: f64 = 65535.0 / 16.0;

fn entry(x_q4: u32, y_q4: u32) -> u32 {
    (y_q4 << 16) | (x_q4 & 0xffff)
}

/// The map the upstream dw100 driver installs by default, built the same way:
/// `qsw = (src_w & 0xfff) << 4` (kept in 16 bits), `qdx = qsw / (mw - 1)`,
/// entry `(row, col) = min(row * qdy, qsh) << 16 | min(col * qdx, qsw)`, with
/// the map dimensions taken from the destination.
///
/// It is an exact identity only when the destination equals the source and
/// both sides are multiples of 16 below 4096: otherwise the even vertex
/// spacing differs from the 16-pixel cells (and a 4096-wide source wraps to
/// 0 in the driver's `& 0xfff`).
pub fn driver_identity_map(
    src_width: u32,
    src_height: u32,
    dst_width: u32,
    dst_height: u32,
) -> VertexMap {
    let (mw, mh) = (map_vertices(dst_width), map_vertices(dst_height));
    let qsw = u32::from(((src_width & 0xfff) << 4) as u16);
    let qsh = u32::from(((src_height & 0xfff) << 4) as u16);
    let qdx = u32::from((qsw / (mw - 1).max(1)) as u16);
    let qdy = u32::from((qsh / (mh - 1).max(1)) as u16);
    let entries = (0..mw * mh)
        .map(|idx| {
            let qy = ((idx / mw) * qdy).min(qsh);
            let qx = ((idx % mw) * qdx).min(qsw);
            entry(u32::from(qx as u16), u32::from(qy as u16))
        })
        .collect();
    VertexMap {
        width: mw,
        height: mh,
        entries,
    }
}

/// Builds a map by asking `source_of` where each vertex's destination
/// position `(x, y)` (in pixels; the last row and column on the picture's
/// edge) comes from in the source. Coordinates are rounded to 1/16 pixel and
/// clamped to what UQ12.4 holds.
pub fn map_from_fn(
    dst_width: u32,
    dst_height: u32,
    mut source_of: impl FnMut(f64, f64) -> (f64, f64),
) -> VertexMap {
    let (mw, mh) = (map_vertices(dst_width), map_vertices(dst_height));
    let quantize = |v: f64| (v.clamp(0.0, MAX_COORDINATE) * 16.0).round() as u32;
    let mut entries = Vec::with_capacity(mw as usize * mh as usize);
    for row in 0..mh {
        for col in 0..mw {
            let x = f64::from((col * CELL_SIZE).min(dst_width));
            let y = f64::from((row * CELL_SIZE).min(dst_height));
            let (sx, sy) = source_of(x, y);
            entries.push(entry(quantize(sx), quantize(sy)));
        }
    }
    VertexMap {
        width: mw,
        height: mh,
        entries,
    }
}

/// Vertices placed on their own destination position scaled to the source:
/// an exact identity whenever source and destination sizes match, whatever
/// the size.
pub fn scale_map(src_width: u32, src_height: u32, dst_width: u32, dst_height: u32) -> VertexMap {
    let (sx, sy) = (
        f64::from(src_width) / f64::from(dst_width),
        f64::from(src_height) / f64::from(dst_height),
    );
    map_from_fn(dst_width, dst_height, |x, y| (x * sx, y * sy))
}

/// Fisheye (barrel distortion) correction: the destination is the rectified
/// picture; a destination point at normalised radius `r` (1 = half the
/// source diagonal) samples the source at radius `r * (1 + k r^2)`.
/// `strength` is `-k`; 0.3 suits a typical wide-angle lens. Pure arithmetic,
/// so the map is the same on every machine.
pub fn fisheye_correction_map(
    src_width: u32,
    src_height: u32,
    dst_width: u32,
    dst_height: u32,
    strength: f64,
) -> VertexMap {
    let (scx, scy) = (f64::from(src_width) / 2.0, f64::from(src_height) / 2.0);
    let (dcx, dcy) = (f64::from(dst_width) / 2.0, f64::from(dst_height) / 2.0);
    let radius = (scx * scx + scy * scy).sqrt();
    let (zx, zy) = (
        f64::from(src_width) / f64::from(dst_width),
        f64::from(src_height) / f64::from(dst_height),
    );
    map_from_fn(dst_width, dst_height, |x, y| {
        let (ux, uy) = ((x - dcx) * zx / radius, (y - dcy) * zy / radius);
        let factor = 1.0 - strength * (ux * ux + uy * uy);
        (scx + ux * factor * radius, scy + uy * factor * radius)
    })
}

/// Rotation by `degrees` (counter-clockwise as seen) around the picture
/// centres, with the destination scaled to the source size. Parts that come
/// from outside the source read clamped edge coordinates or the black border.
pub fn rotation_map(
    src_width: u32,
    src_height: u32,
    dst_width: u32,
    dst_height: u32,
    degrees: f64,
) -> VertexMap {
    let (sin, cos) = degrees.to_radians().sin_cos();
    let (scx, scy) = (f64::from(src_width) / 2.0, f64::from(src_height) / 2.0);
    let (dcx, dcy) = (f64::from(dst_width) / 2.0, f64::from(dst_height) / 2.0);
    let (zx, zy) = (
        f64::from(src_width) / f64::from(dst_width),
        f64::from(src_height) / f64::from(dst_height),
    );
    map_from_fn(dst_width, dst_height, |x, y| {
        let (dx, dy) = ((x - dcx) * zx, (y - dcy) * zy);
        (scx + dx * cos - dy * sin, scy + dx * sin + dy * cos)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_identity_matches_the_documented_640x480_dims_and_spacing() {
        let map = driver_identity_map(640, 480, 640, 480);
        assert_eq!((map.width(), map.height()), (41, 31));
        assert_eq!(map.entries()[1], 16 << 4);
        assert_eq!(map.entries()[41], (16 << 4) << 16);
        assert_eq!(
            *map.entries().last().unwrap(),
            ((480 << 4) << 16) | (640 << 4)
        );
    }

    #[test]
    fn driver_identity_wraps_a_4096_wide_source_like_the_driver() {
        let map = driver_identity_map(4096, 3072, 4096, 3072);
        assert!(map.entries().iter().all(|e| e & 0xffff == 0));
    }

    #[test]
    fn scale_map_of_equal_sizes_equals_driver_identity_on_multiples_of_16() {
        assert_eq!(
            scale_map(1920, 1088, 1920, 1088),
            driver_identity_map(1920, 1088, 1920, 1088)
        );
    }
}
